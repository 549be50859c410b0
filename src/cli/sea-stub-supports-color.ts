/**
 * Stand-in for the optional `supports-color` package that `debug` (via acme-client's axios) tries
 * to require. In the single binary, require() loads built-ins only and warns on anything else; the
 * build:binary bundle aliases the package to this module, meaning "no colours".
 */
export default false
