/*! portcullis browser client: served by the gateway at /auth/client.js.
 *
 * One dependency-free script, no eval and no inline code, so it works under
 * `script-src 'self'`. Load it with <script src="/auth/client.js" defer></script>
 * (routes with `inject_client: true` get that tag from the gateway).
 *
 * window.portcullis:
 *   fetch(input, init)  fetch with the session cookies and the CSRF header; an expired
 *                       access token is refreshed once (shared by every concurrent caller)
 *                       and the request retried once; a refused refresh sends the page to
 *                       the login page.
 *   axios(instance)     the same for an axios instance (interceptors); returns eject().
 *   session()           the /auth/session JSON.
 *   staySignedIn()      refreshes now (extends the idle lifetime), then re-reads the session.
 *
 * Events on window: "portcullis:session-expiring" (detail: {expires_at, seconds_left})
 * warn_before seconds before the session ends, "portcullis:session-expired" when it ends
 * (then the page goes to the login page). With `banner: true` from /auth/session the
 * script shows a "Stay signed in" dialog itself.
 */
(function () {
  'use strict';

  if (window.portcullis && window.portcullis.__portcullis) return; // loaded twice

  var UNSAFE = { POST: true, PUT: true, PATCH: true, DELETE: true };
  var RETRYABLE = { token_expired: true, token_required: true, token_revoked: true };
  var CSRF_COOKIES = ['__Host-pc_csrf', 'pc_csrf'];
  var CSRF_HEADER = 'X-CSRF-Token';
  var SESSION_URL = '/auth/session';
  var REFRESH_URL = '/auth/refresh';
  var MAX_TIMEOUT = 0x7fffffff; // setTimeout's largest delay (about 24.8 days)
  var EXPIRING = 'portcullis:session-expiring';
  var EXPIRED = 'portcullis:session-expired';

  var nativeFetch = window.fetch.bind(window);

  // ---- CSRF ---------------------------------------------------------------------------

  /** The CSRF cookie's value (`__Host-pc_csrf` over HTTPS, `pc_csrf` in plain-HTTP setups). */
  function csrfToken() {
    var jar = {};
    var parts = document.cookie ? document.cookie.split(';') : [];
    for (var i = 0; i < parts.length; i++) {
      var eq = parts[i].indexOf('=');
      if (eq < 0) continue;
      var name = parts[i].slice(0, eq).trim();
      if (!(name in jar)) jar[name] = parts[i].slice(eq + 1).trim();
    }
    for (var j = 0; j < CSRF_COOKIES.length; j++) {
      if (jar[CSRF_COOKIES[j]]) return decodeURIComponent(jar[CSRF_COOKIES[j]]);
    }
    return null;
  }

  /** True when `url` (relative or absolute) points at this page's origin. */
  function sameOrigin(url) {
    try {
      return new URL(url, location.href).origin === location.origin;
    } catch (e) {
      return false;
    }
  }

  // ---- refresh, shared by every caller --------------------------------------------------

  var inflight = null; // the one refresh in flight
  var generation = 0; // successful refreshes so far
  var rearming = null; // the session re-read after the last refresh
  var redirecting = false;

  /** An Error for a refused or failed refresh; `status` is the HTTP status (0: network). */
  function refreshError(status, code) {
    var e = new Error('portcullis: refresh failed' + (code ? ' (' + code + ')' : ''));
    e.status = status;
    e.code = code || null;
    return e;
  }

  /** POST /auth/refresh, once for every caller that asks while it is in flight. */
  function refresh() {
    if (inflight) return inflight;
    var headers = { Accept: 'application/json' };
    var token = csrfToken();
    if (token) headers[CSRF_HEADER] = token;
    inflight = nativeFetch(REFRESH_URL, {
      method: 'POST',
      credentials: 'same-origin',
      headers: headers,
    })
      .then(
        function (res) {
          if (res.ok) return res.json().catch(function () { return {}; });
          return readError(res).then(function (code) {
            throw refreshError(res.status, code);
          });
        },
        function (err) {
          var e = refreshError(0, null);
          e.cause = err;
          throw e;
        }
      )
      .then(
        function (body) {
          generation++;
          inflight = null;
          rearming = loadSession().catch(function () { return null; });
          return body;
        },
        function (err) {
          inflight = null;
          throw err;
        }
      );
    return inflight;
  }

  /**
   * Wait for a refresh that makes a request sent at generation `sentAt` worth retrying: none
   * when one already completed since it was sent, else the shared one.
   */
  function refreshSince(sentAt) {
    return sentAt !== generation ? Promise.resolve() : refresh();
  }

  /** True when the refresh was refused: the session is gone (not a network or server error). */
  function refused(err) {
    return !!err && (err.status === 401 || err.status === 403);
  }

  function loginUrl() {
    return (
      '/auth/login?return_to=' +
      encodeURIComponent(location.pathname + location.search) +
      '&session_expired=1'
    );
  }

  /** The session is over: tell the page once, then go to the login page. */
  function expire(detail) {
    if (redirecting) return;
    redirecting = true;
    clearTimers();
    removeBanner();
    dispatch(EXPIRED, detail || {});
    location.assign(loginUrl());
  }

  /** After a failed refresh: expire when it was refused; reject with `err` either way. */
  function onRefreshFailure(err, original) {
    if (refused(err)) expire({ expires_at: current ? current.endsAt : null, reason: err.code });
    return Promise.reject(original || err);
  }

  /** The `error` code of a JSON error response (null when it has none). */
  function readError(res) {
    var type = (res.headers.get('Content-Type') || '').toLowerCase();
    if (type.indexOf('json') < 0) return Promise.resolve(null);
    return res
      .clone()
      .json()
      .then(
        function (body) {
          return body && typeof body.error === 'string' ? body.error : null;
        },
        function () {
          return null;
        }
      );
  }

  // ---- portcullis.fetch -----------------------------------------------------------------

  function setCsrf(req) {
    if (!UNSAFE[req.method.toUpperCase()] || !sameOrigin(req.url)) return;
    var token = csrfToken();
    if (token) req.headers.set(CSRF_HEADER, token);
  }

  function pcFetch(input, init) {
    var first;
    try {
      var opts = {};
      if (init) for (var k in init) opts[k] = init[k];
      if (!opts.credentials && !(input instanceof Request)) opts.credentials = 'same-origin';
      first = new Request(input, opts);
    } catch (e) {
      return Promise.reject(e);
    }
    setCsrf(first);
    // The retry needs its own copy of the body: clone before the first try reads it.
    var spare = first.clone();
    var sentAt = generation;
    return nativeFetch(first).then(function (res) {
      if (res.status !== 401) return res;
      return readError(res).then(function (code) {
        if (!code || !RETRYABLE[code]) return res;
        return refreshSince(sentAt).then(
          function () {
            setCsrf(spare); // the refresh may have rotated the CSRF cookie
            return nativeFetch(spare);
          },
          function (err) {
            return onRefreshFailure(err);
          }
        );
      });
    });
  }

  // ---- portcullis.axios -----------------------------------------------------------------

  var RETRIED = '__portcullisRetried';
  var SENT_AT = '__portcullisSentAt';

  function axiosUrl(config) {
    var url = config.url || '';
    if (config.baseURL && !/^[a-z][a-z0-9+.-]*:/i.test(url)) {
      url = config.baseURL.replace(/\/+$/, '') + '/' + url.replace(/^\/+/, '');
    }
    return url;
  }

  function setHeader(headers, name, value) {
    if (headers && typeof headers.set === 'function') headers.set(name, value);
    else if (headers) headers[name] = value;
  }

  function errorCode(data) {
    if (typeof data === 'string') {
      try {
        data = JSON.parse(data);
      } catch (e) {
        return null;
      }
    }
    return data && typeof data.error === 'string' ? data.error : null;
  }

  function installAxios(instance) {
    if (!instance || !instance.interceptors) {
      throw new TypeError('portcullis.axios: expects an axios instance (axios.create())');
    }
    var requestId = instance.interceptors.request.use(function (config) {
      if (!config.headers) config.headers = {};
      var method = (config.method || 'get').toUpperCase();
      if (UNSAFE[method] && sameOrigin(axiosUrl(config))) {
        var token = csrfToken();
        if (token) setHeader(config.headers, CSRF_HEADER, token);
      }
      if (config.withCredentials === undefined && sameOrigin(axiosUrl(config))) {
        config.withCredentials = true;
      }
      config[SENT_AT] = generation;
      return config;
    });
    var responseId = instance.interceptors.response.use(null, function (error) {
      var res = error && error.response;
      var config = error && error.config;
      if (!res || res.status !== 401 || !config || config[RETRIED]) return Promise.reject(error);
      var code = errorCode(res.data);
      if (!code || !RETRYABLE[code]) return Promise.reject(error);
      config[RETRIED] = true;
      return refreshSince(config[SENT_AT]).then(
        function () {
          return instance(config);
        },
        function (err) {
          return onRefreshFailure(err, error);
        }
      );
    });
    return function eject() {
      instance.interceptors.request.eject(requestId);
      instance.interceptors.response.eject(responseId);
    };
  }

  // ---- session and timers ---------------------------------------------------------------

  var current = null; // {endsAt, deadline (ms, this page's clock), warnBefore, banner}
  var timers = [];

  function clearTimers() {
    for (var i = 0; i < timers.length; i++) clearTimeout(timers[i]);
    timers = [];
  }

  /** setTimeout that also waits longer than setTimeout's largest delay. */
  function at(deadline, fn) {
    var wait = deadline - Date.now();
    if (wait > MAX_TIMEOUT) {
      timers.push(setTimeout(function () { at(deadline, fn); }, MAX_TIMEOUT));
    } else {
      timers.push(setTimeout(fn, Math.max(0, wait)));
    }
  }

  function dispatch(name, detail) {
    var event;
    try {
      event = new CustomEvent(name, { detail: detail });
    } catch (e) {
      event = document.createEvent('CustomEvent');
      event.initCustomEvent(name, false, false, detail);
    }
    window.dispatchEvent(event);
  }

  function secondsLeft() {
    return current ? Math.max(0, Math.round((current.deadline - Date.now()) / 1000)) : 0;
  }

  /** The earlier of the idle and the absolute end (RFC 3339 strings; null when neither). */
  function sessionEnd(s) {
    var ends = [s.idle_expires_at, s.session_expires_at];
    var best = null;
    for (var i = 0; i < ends.length; i++) {
      var t = typeof ends[i] === 'string' ? Date.parse(ends[i]) : NaN;
      if (isFinite(t) && (best === null || t < best.t)) best = { t: t, text: ends[i] };
    }
    return best;
  }

  /**
   * Arm the expiring and expired timers from a /auth/session body. `serverNow` is the
   * response's Date (ms) when it had one, so a page whose clock is off still warns in time.
   */
  function arm(s, serverNow) {
    var end = sessionEnd(s);
    // The same end as armed already (a page reading the session): keep the timers.
    if (end && current && end.text === current.endsAt && timers.length) return;
    clearTimers();
    removeBanner();
    if (!end || redirecting) {
      current = null;
      return;
    }
    var now = Date.now();
    var skew = isFinite(serverNow) && serverNow > 0 ? serverNow - now : 0;
    var warnBefore = typeof s.warn_before === 'number' && s.warn_before >= 0 ? s.warn_before : 300;
    current = {
      endsAt: end.text,
      deadline: end.t - skew,
      warnBefore: warnBefore,
      banner: s.banner !== false,
    };
    var mine = current;
    at(mine.deadline - warnBefore * 1000, function () {
      if (current !== mine) return;
      var detail = { expires_at: mine.endsAt, seconds_left: secondsLeft() };
      dispatch(EXPIRING, detail);
      if (mine.banner) showBanner();
    });
    at(mine.deadline, function () {
      if (current === mine) checkEnded(mine);
    });
  }

  /**
   * The session should have ended: unless another tab kept it alive (the session now ends
   * later), tell the page and go to the login page.
   */
  function checkEnded(mine) {
    readSession().then(
      function (r) {
        if (current !== mine) return;
        var end = r.ok ? sessionEnd(r.body) : null;
        if (end && end.t > Date.parse(mine.endsAt)) arm(r.body, r.date);
        else expire({ expires_at: mine.endsAt });
      },
      function () {
        if (current === mine) expire({ expires_at: mine.endsAt });
      }
    );
  }

  /** GET /auth/session without refreshing: {ok, status, body, date}. */
  function readSession(fetcher) {
    return (fetcher || nativeFetch)(SESSION_URL, {
      credentials: 'same-origin',
      headers: { Accept: 'application/json' },
    }).then(function (res) {
      var date = Date.parse(res.headers.get('Date') || '');
      return res
        .json()
        .catch(function () { return null; })
        .then(function (body) {
          return { ok: res.ok && !!body, status: res.status, body: body, date: date };
        });
    });
  }

  /** Read the session and arm the timers; resolves with the session (null when signed out). */
  function loadSession() {
    return readSession().then(function (r) {
      if (!r.ok) return null;
      arm(r.body, r.date);
      return r.body;
    });
  }

  function session() {
    return readSession(pcFetch).then(function (r) {
      if (!r.ok) {
        var e = new Error('portcullis: /auth/session answered ' + r.status);
        e.status = r.status;
        e.code = r.body && r.body.error;
        throw e;
      }
      arm(r.body, r.date);
      return r.body;
    });
  }

  function staySignedIn() {
    removeBanner();
    return refresh().then(
      function () {
        return rearming;
      },
      function (err) {
        return onRefreshFailure(err);
      }
    );
  }

  // ---- the banner -----------------------------------------------------------------------

  var banner = null;
  var bannerTick = null;
  var focusBefore = null;

  function bannerText() {
    var s = secondsLeft();
    if (s >= 60) {
      var m = Math.round(s / 60);
      return 'Your session will expire in ' + m + (m === 1 ? ' minute.' : ' minutes.');
    }
    return 'Your session will expire in ' + s + (s === 1 ? ' second.' : ' seconds.');
  }

  function style(el, rules) {
    for (var k in rules) el.style[k] = rules[k];
  }

  function showBanner() {
    if (banner || !document.body) return;
    var box = document.createElement('div');
    box.id = 'portcullis-session-banner';
    box.setAttribute('role', 'alertdialog');
    box.setAttribute('aria-modal', 'false');
    box.setAttribute('aria-labelledby', 'portcullis-session-title');
    box.setAttribute('aria-describedby', 'portcullis-session-text');
    style(box, {
      position: 'fixed',
      top: '1rem',
      left: '50%',
      transform: 'translateX(-50%)',
      zIndex: '2147483647',
      maxWidth: '32rem',
      width: 'calc(100% - 2rem)',
      boxSizing: 'border-box',
      padding: '1rem 1.25rem',
      background: '#fff8d6',
      color: '#1a1a1a',
      border: '2px solid #8a6d00',
      borderRadius: '6px',
      boxShadow: '0 4px 16px rgba(0,0,0,0.25)',
      font: '16px/1.4 system-ui, sans-serif',
    });
    var title = document.createElement('p');
    title.id = 'portcullis-session-title';
    title.textContent = 'Session expiring';
    style(title, { margin: '0 0 0.25rem', fontWeight: 'bold' });
    var text = document.createElement('p');
    text.id = 'portcullis-session-text';
    text.textContent = bannerText();
    style(text, { margin: '0 0 0.75rem' });
    var button = document.createElement('button');
    button.type = 'button';
    button.textContent = 'Stay signed in';
    style(button, {
      font: 'inherit',
      padding: '0.4rem 1rem',
      background: '#1f4fbf',
      color: '#ffffff',
      border: '2px solid #1f4fbf',
      borderRadius: '4px',
      cursor: 'pointer',
    });
    button.addEventListener('click', function () {
      staySignedIn().catch(function () {});
    });
    box.addEventListener('keydown', function (e) {
      if (e.key === 'Escape') removeBanner();
    });
    box.appendChild(title);
    box.appendChild(text);
    box.appendChild(button);
    focusBefore = document.activeElement;
    document.body.appendChild(box);
    banner = box;
    button.focus();
    bannerTick = setInterval(function () {
      text.textContent = bannerText();
    }, 1000);
  }

  function removeBanner() {
    if (bannerTick) clearInterval(bannerTick);
    bannerTick = null;
    if (!banner) return;
    var hadFocus = banner.contains(document.activeElement);
    if (banner.parentNode) banner.parentNode.removeChild(banner);
    banner = null;
    if (hadFocus && focusBefore && typeof focusBefore.focus === 'function' && document.contains(focusBefore)) {
      focusBefore.focus();
    }
    focusBefore = null;
  }

  // A tab in the background gets its timers throttled: check again when it shows.
  document.addEventListener('visibilitychange', function () {
    if (document.visibilityState === 'visible' && current && Date.now() >= current.deadline) {
      checkEnded(current);
    }
  });

  window.portcullis = {
    __portcullis: true,
    fetch: pcFetch,
    axios: installAxios,
    session: session,
    staySignedIn: staySignedIn,
  };

  // Start: a signed-in page arms its timers; a public page (401) is left alone.
  function start() {
    loadSession().catch(function () {});
  }
  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }
})();
