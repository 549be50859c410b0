import type { SessionInfo } from '../../web/api-types.js'
import { api, ApiFailure } from '../api.js'
import { h, replace } from '../dom.js'
import type { App } from '../main.js'
import { errorBox } from '../parts.js'

/** Where to go after logging in: a path of this UI only (no open redirect). */
function nextPath(query: URLSearchParams): string {
  const next = query.get('next') ?? '/'
  return next.startsWith('/') && !next.startsWith('//') && !next.startsWith('/ui/login') ? next : '/'
}

export function loginPage(app: App, query: URLSearchParams): HTMLElement {
  app.title('Log in')
  const problem = h('div', { 'aria-live': 'assertive' })
  const user = h('input', { id: 'login-user', name: 'user', autocomplete: 'username', required: true, autocapitalize: 'none', spellcheck: 'false' })
  const password = h('input', { id: 'login-password', name: 'password', type: 'password', autocomplete: 'current-password', required: true })
  const submit = h('button', { type: 'submit' }, 'Log in')
  const form = h(
    'form',
    {
      class: 'login',
      onsubmit: (event: Event) => {
        event.preventDefault()
        submit.disabled = true
        replace(problem)
        api<SessionInfo>('POST', 'login', {}, { user: user.value, password: password.value })
          .then(session => {
            app.setSession(session)
            app.navigate(nextPath(query), { replace: true })
          })
          .catch((error: unknown) => {
            const message = error instanceof ApiFailure && error.status === 401 ? 'Incorrect user name or password.' : (error as Error).message
            replace(problem, errorBox(message))
            password.value = ''
            password.focus()
          })
          .finally(() => (submit.disabled = false))
      },
    },
    h('label', { for: 'login-user' }, 'User name'),
    user,
    h('label', { for: 'login-password' }, 'Password'),
    password,
    problem,
    submit,
  )
  const intro = app.session.canLogIn
    ? h('p', { class: 'muted' }, 'Use the user name and password you log in to this registry with (docker login).')
    : h('p', { class: 'muted' }, 'This registry has no users: no login is needed.')
  return h('section', { class: 'narrow' }, h('h1', { tabindex: -1 }, 'Log in'), intro, app.session.canLogIn ? form : null)
}
