# Berth: a self-hosted container registry with its own HTTPS front door, in one Node process.
#
#   docker compose up -d registry        (docker-compose.yml: ports 80/443, ./datadir, ./certs)
#
# Stage 1 bundles the TypeScript into one file (dist/berth-bundle.cjs, every dependency inside),
# its loader (dist/berth.cjs) and V8's code cache for it, made by the same node as stage 2's;
# stage 2 is a plain Node LTS image holding those three files, run as the unprivileged `node` user.
ARG NODE_IMAGE=node:22-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# --ignore-scripts: the `prepare` script would build before the sources are copied.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
RUN npm run build

FROM ${NODE_IMAGE}
ENV NODE_ENV=production \
    BERTH_DATADIR=/srv/berth/datadir \
    BERTH_CERTS=/srv/berth/certs \
    BERTH_IN_CONTAINER=1
WORKDIR /srv/berth
COPY --from=build /src/dist/berth.cjs /src/dist/berth-bundle.cjs* /usr/local/lib/berth/
# The folders compose mounts ./datadir and ./certs on; owned by `node` (uid 1000) for named volumes.
RUN mkdir -p /srv/berth/datadir /srv/berth/certs && chown node:node /srv/berth/datadir /srv/berth/certs
# Not root. Ports 80 and 443 still work: Docker (20.10+) and Podman set
# net.ipv4.ip_unprivileged_port_start=0 inside a container's own network namespace, so no
# capability or setcap is needed; `ports:` in compose publishes them on the host.
USER node
EXPOSE 80 443 5000
# Healthy when GET /readyz answers 200 (storage writable, a certificate loaded, not shutting down),
# asked on the port that serves it without a login: BERTH_PORT in local mode, else port 80's
# BERTH_HTTP_PORT (before its redirect). No curl in the image: node's own http client.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["node", "-e", "const e=process.env,l=/^(1|true|yes|on)$/i.test((e.BERTH_LOCAL||'').trim()),h=e.BERTH_HOST,r=require('http').get({host:!h||h==='0.0.0.0'||h==='::'?'127.0.0.1':h,port:l?e.BERTH_PORT||5000:e.BERTH_HTTP_PORT||80,path:'/readyz',timeout:4000},s=>process.exit(s.statusCode===200?0:1));r.on('error',()=>process.exit(1));r.on('timeout',()=>process.exit(1))"]
ENTRYPOINT ["node", "/usr/local/lib/berth/berth.cjs"]
CMD ["serve"]
