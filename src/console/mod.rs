//! The operations console at `/console`, served by the daemon's own HTTP server (see
//! [`crate::http`]): server-side rendered HTML (minijinja, templates built into the
//! binary), no script, English and Simplified Chinese.
//!
//! Pages: Today (what falls due today by currency and what became of it, the last 30
//! days as an SVG chart), Overdue (buckets, the last day's movement, the credit-warning
//! list), Queues (retries by day, look-ups, rejected attempts, deferred and failed
//! emails), Agreement and Customer (everything about one, with one timeline), Search.
//!
//! Safety: every page needs a signed-in operator (a session cookie from the login form,
//! `SameSite=Strict`, `HttpOnly`), or for reading the `[http]` bearer token. With
//! `http.console_user`/`console_password` only that user signs in; with `http.token` any
//! name signs in with the token as password; with neither, only on a loopback address,
//! a name is enough. On any other address without one of them the console refuses
//! every request. Every form that changes something carries the session's CSRF token.
//! Personal data is masked except on the agreement and customer pages, and each view of
//! those is logged with the operator's name. Responses carry a Content-Security-Policy
//! that allows no script and no inline style.

mod actions;
mod chart;
pub mod i18n;
mod views;

use crate::clock::Clock;
use crate::store::Store;
use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use i18n::Lang;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The session cookie's name.
const COOKIE: &str = "repayd_console";
/// A session ends after this long without a request.
const SESSION_IDLE: Duration = Duration::from_secs(8 * 3600);
/// The largest form accepted.
pub const MAX_FORM_BYTES: usize = 16 * 1024;

/// What every console response carries: nothing but this origin's stylesheet and
/// images, no script at all, no framing, forms only to this origin.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; \
    img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Who may sign in, from `[http]`.
#[derive(Debug, Clone, Default)]
pub struct ConsoleAuth {
    /// `http.token`: with it, any name signs in with the token as password, and a
    /// request with `Authorization: Bearer <token>` may read.
    pub token: Option<SecretString>,
    /// `http.console_user` and its password: with them, only this user signs in.
    pub user: Option<(String, SecretString)>,
    /// The listener is not on a loopback address.
    pub public_address: bool,
}

impl ConsoleAuth {
    /// On a non-loopback address without a token or a user, the console serves nobody.
    fn refuses_everyone(&self) -> bool {
        self.public_address && self.token.is_none() && self.user.is_none()
    }

    fn check(&self, user: &str, password: &str) -> bool {
        if user.trim().is_empty() {
            return false;
        }
        if let Some((name, secret)) = &self.user {
            return user == name
                && crate::http::constant_time_eq(
                    password.as_bytes(),
                    secret.expose_secret().as_bytes(),
                );
        }
        if let Some(token) = &self.token {
            return crate::http::constant_time_eq(
                password.as_bytes(),
                token.expose_secret().as_bytes(),
            );
        }
        true
    }
}

/// The `[console]` settings (the console's sign-in settings are in `[http]`, beside the
/// server that serves it).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSettings {
    /// The operations team's time zone (IANA name, e.g. `Asia/Shanghai`): the date of the
    /// Today page and the days of the Queues page's retries. Default: the machine's time
    /// zone (`TZ`, else `/etc/localtime`), else UTC.
    pub time_zone: Option<String>,
}

impl ConsoleSettings {
    /// Every problem, each naming its key.
    pub fn check(&self) -> Vec<crate::config::ConfigError> {
        match &self.time_zone {
            Some(name) if name.trim().parse::<chrono_tz::Tz>().is_err() => {
                vec![crate::config::ConfigError::invalid(
                    "console.time_zone",
                    format!(
                        "{name:?} is not an IANA time zone name (e.g. \"Asia/Shanghai\", \"UTC\")"
                    ),
                )]
            }
            _ => Vec::new(),
        }
    }

    /// The zone in force and where it came from (`console.time_zone`, the machine, or
    /// the fallback UTC).
    pub fn zone(&self) -> (chrono_tz::Tz, &'static str) {
        if let Some(tz) = self
            .time_zone
            .as_deref()
            .and_then(|n| n.trim().parse::<chrono_tz::Tz>().ok())
        {
            return (tz, "console.time_zone");
        }
        match machine_time_zone(
            std::env::var("TZ").ok().as_deref(),
            std::fs::read_link("/etc/localtime").ok().as_deref(),
        ) {
            Some(tz) => (tz, "the machine's time zone"),
            None => (chrono_tz::UTC, "UTC: the machine's time zone is unknown"),
        }
    }
}

/// The machine's IANA zone from `TZ` (`Asia/Shanghai` or `:Asia/Shanghai`) or the target
/// of the `/etc/localtime` link (`/usr/share/zoneinfo/Asia/Shanghai`).
fn machine_time_zone(
    tz_env: Option<&str>,
    localtime: Option<&std::path::Path>,
) -> Option<chrono_tz::Tz> {
    if let Some(tz) = tz_env
        .map(|v| v.trim().trim_start_matches(':'))
        .filter(|v| !v.is_empty())
    {
        return tz.parse().ok();
    }
    let target = localtime?.to_str()?;
    let (_, name) = target.split_once("zoneinfo/")?;
    name.parse().ok()
}

/// What the console needs besides the database.
#[derive(Debug, Clone)]
pub struct ConsoleOptions {
    /// `overdue.credit_report_after_days` (0: no credit reporting).
    pub credit_report_after_days: u32,
    /// The operations' time zone (`[console] time_zone`): whose date "today" is.
    pub time_zone: chrono_tz::Tz,
    /// The policy the operator actions apply (as at start; a reload does not change
    /// it here). Without one the console offers no actions.
    pub policy: Option<Arc<crate::engine::policy::EnginePolicy>>,
}

impl Default for ConsoleOptions {
    fn default() -> Self {
        Self {
            credit_report_after_days: 0,
            time_zone: chrono_tz::UTC,
            policy: None,
        }
    }
}

#[derive(Debug, Clone)]
struct Session {
    actor: String,
    csrf: String,
    lang: Lang,
    seen: Instant,
}

/// The signed-in operator of one request.
#[derive(Debug, Clone)]
pub(crate) struct Operator {
    pub actor: String,
    /// `None` for a bearer-token reader, who can change nothing.
    pub csrf: Option<String>,
    pub lang: Lang,
}

pub(crate) struct Console {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub options: ConsoleOptions,
    auth: ConsoleAuth,
    sessions: Mutex<HashMap<String, Session>>,
    templates: minijinja::Environment<'static>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").finish_non_exhaustive()
    }
}

/// How often the background refresh of the Today page's past days looks for days to
/// keep or to refresh ([`refresh_past_days`]).
pub const REFRESH_EVERY: Duration = Duration::from_secs(30);

/// Keeps the figures of the Today chart's past days (migration 0017) for those not kept
/// yet or changed since: each is read once here instead of on every page view. A day is
/// kept only up to the last day whose changes the database notes (tomorrow in UTC by its
/// clock), so no change to a kept day goes unnoticed. Forgets days a week older than the
/// chart. Returns how many days it refreshed.
pub async fn refresh_past_days(
    store: &Store,
    clock: &dyn Clock,
    time_zone: chrono_tz::Tz,
) -> crate::store::Result<usize> {
    let now = clock.now();
    let today = now.with_timezone(&time_zone).date_naive();
    let from = today
        .checked_sub_days(chrono::Days::new(views::CHART_DAYS - 1))
        .unwrap_or(today);
    let yesterday = today.pred_opt().unwrap_or(today);
    let noted_until = store.console_noted_until().await?;
    let kept: std::collections::BTreeSet<String> = store
        .console_kept_days(&views::day_key(from), &views::day_key(yesterday))
        .await?
        .into_iter()
        .map(|r| r.due_date)
        .collect();
    let mut refreshed = 0;
    for day in from.iter_days().take_while(|d| *d < today) {
        let key = views::day_key(day);
        if key > noted_until || kept.contains(&key) {
            continue;
        }
        store
            .refresh_console_day(&key, crate::clock::to_epoch_ms(now))
            .await?;
        refreshed += 1;
    }
    let forget = from.checked_sub_days(chrono::Days::new(7)).unwrap_or(from);
    store
        .console_forget_days_before(&views::day_key(forget))
        .await?;
    Ok(refreshed)
}

/// Runs [`refresh_past_days`] now and every [`REFRESH_EVERY`] until `stop`.
pub fn spawn_refresher(
    store: Store,
    clock: Arc<dyn Clock>,
    time_zone: chrono_tz::Tz,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let started = Instant::now();
            match refresh_past_days(&store, clock.as_ref(), time_zone).await {
                Ok(0) => {}
                Ok(days) => tracing::debug!(
                    days,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "console: past days' figures refreshed"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "console: refreshing past days' figures failed")
                }
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(REFRESH_EVERY) => {}
            }
        }
    })
}

/// The console's routes, ready to merge into the operations server's router.
pub fn router(
    store: Store,
    clock: Arc<dyn Clock>,
    auth: ConsoleAuth,
    options: ConsoleOptions,
) -> Router {
    let console = Arc::new(Console {
        store,
        clock,
        options,
        auth,
        sessions: Mutex::new(HashMap::new()),
        templates: templates(),
    });
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/today") }))
        .route(
            "/console/",
            get(|| async { Redirect::to("/console/today") }),
        )
        .route("/console/static/console.css", get(stylesheet))
        .route("/console/login", get(login_form).post(login))
        .route("/console/logout", post(logout))
        .route("/console/lang", get(switch_language))
        .route("/console/today", get(views::today))
        .route("/console/overdue", get(views::overdue))
        .route("/console/queues", get(views::queues))
        .route("/console/search", get(views::search))
        .route("/console/agreements/{key}", get(views::agreement))
        .route("/console/customers/{key}", get(views::customer))
        .route("/console/actions/{name}", post(actions::action))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(console)
}

const TEMPLATES: &[(&str, &str)] = &[
    (
        "_layout.html",
        include_str!("../../templates/console/_layout.html"),
    ),
    (
        "login.html",
        include_str!("../../templates/console/login.html"),
    ),
    (
        "today.html",
        include_str!("../../templates/console/today.html"),
    ),
    (
        "overdue.html",
        include_str!("../../templates/console/overdue.html"),
    ),
    (
        "queues.html",
        include_str!("../../templates/console/queues.html"),
    ),
    (
        "search.html",
        include_str!("../../templates/console/search.html"),
    ),
    (
        "agreement.html",
        include_str!("../../templates/console/agreement.html"),
    ),
    (
        "customer.html",
        include_str!("../../templates/console/customer.html"),
    ),
    (
        "_timeline.html",
        include_str!("../../templates/console/_timeline.html"),
    ),
    (
        "message.html",
        include_str!("../../templates/console/message.html"),
    ),
    (
        "confirm.html",
        include_str!("../../templates/console/confirm.html"),
    ),
];

const STYLESHEET: &str = include_str!("../../templates/console/console.css");

fn templates() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    for (name, text) in TEMPLATES {
        env.add_template(name, text)
            .unwrap_or_else(|e| panic!("built-in console template {name}: {e}"));
    }
    env.add_function("t", |state: &minijinja::State, key: &str| -> String {
        let lang = state
            .lookup("lang")
            .and_then(|v| v.as_str().map(Lang::from_tag))
            .unwrap_or(Lang::En);
        i18n::word(lang, key)
    });
    env
}

impl Console {
    /// A page from `template` with `context` (a JSON object) plus the operator.
    pub(crate) fn page(
        &self,
        template: &str,
        operator: &Operator,
        started: Instant,
        mut context: serde_json::Value,
    ) -> Response {
        if let Some(map) = context.as_object_mut() {
            map.insert("lang".into(), operator.lang.tag().into());
            map.insert("actor".into(), operator.actor.clone().into());
            map.insert(
                "csrf".into(),
                operator.csrf.clone().unwrap_or_default().into(),
            );
            map.insert(
                "elapsed_ms".into(),
                format!("{:.1}", started.elapsed().as_secs_f64() * 1000.0).into(),
            );
        }
        self.render(template, context)
    }

    fn render(&self, template: &str, context: serde_json::Value) -> Response {
        let rendered = self
            .templates
            .get_template(template)
            .and_then(|t| t.render(minijinja::Value::from_serialize(&context)));
        match rendered {
            Ok(html) => {
                ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
            }
            Err(e) => {
                tracing::error!(template, error = %e, "console page could not be rendered");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the page could not be made\n",
                )
                    .into_response()
            }
        }
    }

    /// The operator of a request: a live session, or a bearer-token reader.
    pub(crate) fn operator(&self, headers: &HeaderMap) -> Option<Operator> {
        if self.auth.refuses_everyone() {
            return None;
        }
        if let Some(id) = session_cookie(headers) {
            let mut sessions = self.sessions.lock().expect("sessions lock");
            sessions.retain(|_, s| s.seen.elapsed() < SESSION_IDLE);
            if let Some(s) = sessions.get_mut(&id) {
                s.seen = Instant::now();
                return Some(Operator {
                    actor: s.actor.clone(),
                    csrf: Some(s.csrf.clone()),
                    lang: s.lang,
                });
            }
        }
        let token = self.auth.token.as_ref()?;
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())?;
        crate::http::constant_time_eq(given.as_bytes(), token.expose_secret().as_bytes()).then(
            || Operator {
                actor: "bearer-token".into(),
                csrf: None,
                lang: accept_language(headers),
            },
        )
    }

    /// The operator of a form that changes something: a session whose CSRF token the
    /// form carries. `Err` is the refusal to send.
    pub(crate) fn operator_for_change(
        &self,
        headers: &HeaderMap,
        csrf: &str,
    ) -> Result<Operator, Box<Response>> {
        let Some(operator) = self.operator(headers) else {
            return Err(Box::new(refused(
                StatusCode::UNAUTHORIZED,
                "sign in first\n",
            )));
        };
        let Some(expected) = &operator.csrf else {
            return Err(Box::new(refused(
                StatusCode::FORBIDDEN,
                "a bearer token may read the console but change nothing; sign in\n",
            )));
        };
        if !crate::http::constant_time_eq(csrf.as_bytes(), expected.as_bytes()) {
            tracing::warn!(actor = %operator.actor, "console: a form without this session's CSRF token was refused");
            return Err(Box::new(refused(
                StatusCode::FORBIDDEN,
                "the form's CSRF token does not match this session\n",
            )));
        }
        Ok(operator)
    }

    /// Where a request without an operator goes: the login form, or a refusal.
    pub(crate) fn not_signed_in(&self) -> Response {
        if self.auth.refuses_everyone() {
            return refuses_everyone();
        }
        Redirect::to("/console/login").into_response()
    }
}

fn refuses_everyone() -> Response {
    refused(
        StatusCode::FORBIDDEN,
        "the console is off: http.listen is not a loopback address and neither http.token \
         nor http.console_user/console_password is set\n",
    )
}

pub(crate) fn refused(code: StatusCode, text: &'static str) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text,
    )
        .into_response()
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
}

fn accept_language(headers: &HeaderMap) -> Lang {
    headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .map(Lang::from_accept_language)
        .unwrap_or(Lang::En)
}

/// 32 random bytes from the operating system, as hex.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    hex::encode(bytes)
}

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        STYLESHEET,
    )
        .into_response()
}

async fn login_form(State(c): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if c.auth.refuses_everyone() {
        return refuses_everyone();
    }
    let lang = accept_language(&headers);
    c.render(
        "login.html",
        serde_json::json!({
            "lang": lang.tag(),
            "needs_password": c.auth.token.is_some() || c.auth.user.is_some(),
            "error": false,
        }),
    )
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    lang: String,
}

async fn login(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    if c.auth.refuses_everyone() {
        return refuses_everyone();
    }
    let lang = if form.lang.is_empty() {
        accept_language(&headers)
    } else {
        Lang::from_tag(&form.lang)
    };
    let user = form.user.trim().to_string();
    if user.chars().count() > 64 || !c.auth.check(&user, &form.password) {
        tracing::warn!(user = %user.chars().take(64).collect::<String>(), "console: sign-in refused");
        let mut page = c.render(
            "login.html",
            serde_json::json!({
                "lang": lang.tag(),
                "needs_password": c.auth.token.is_some() || c.auth.user.is_some(),
                "error": true,
            }),
        );
        *page.status_mut() = StatusCode::UNAUTHORIZED;
        return page;
    }
    let id = random_token();
    c.sessions.lock().expect("sessions lock").insert(
        id.clone(),
        Session {
            actor: user.clone(),
            csrf: random_token(),
            lang,
            seen: Instant::now(),
        },
    );
    tracing::info!(actor = %user, "console: signed in");
    let cookie = format!("{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict");
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/console/today".to_string()),
            (header::SET_COOKIE, cookie),
        ],
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Err(refusal) = c.operator_for_change(&headers, &form.csrf) {
        return *refusal;
    }
    if let Some(id) = session_cookie(&headers) {
        c.sessions.lock().expect("sessions lock").remove(&id);
    }
    let cookie = format!("{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0");
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/console/login".to_string()),
            (header::SET_COOKIE, cookie),
        ],
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct LangQuery {
    to: String,
    #[serde(default)]
    back: String,
}

async fn switch_language(
    State(c): State<Arc<Console>>,
    headers: HeaderMap,
    Query(q): Query<LangQuery>,
) -> Response {
    if c.operator(&headers).is_none() {
        return c.not_signed_in();
    }
    if let Some(id) = session_cookie(&headers)
        && let Some(s) = c.sessions.lock().expect("sessions lock").get_mut(&id)
    {
        s.lang = Lang::from_tag(&q.to);
    }
    // Only back into the console: never an open redirect.
    let back = if q.back.starts_with("/console/") && !q.back.starts_with("/console//") {
        q.back
    } else {
        "/console/today".to_string()
    };
    Redirect::to(&back).into_response()
}

/// Path parameters of the detail pages.
#[derive(Debug, Deserialize)]
pub(crate) struct KeyPath {
    pub key: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn who_may_sign_in() {
        let secret = |s: &str| SecretString::from(s.to_string());
        // Loopback without credentials: any name, no password.
        let open = ConsoleAuth::default();
        assert!(!open.refuses_everyone());
        assert!(open.check("alice", ""));
        assert!(!open.check("  ", ""));
        // Another address without credentials: nobody.
        let public = ConsoleAuth {
            public_address: true,
            ..ConsoleAuth::default()
        };
        assert!(public.refuses_everyone());
        // The token is the password of any name.
        let token = ConsoleAuth {
            token: Some(secret("t0ken")),
            public_address: true,
            ..ConsoleAuth::default()
        };
        assert!(!token.refuses_everyone());
        assert!(token.check("bob", "t0ken"));
        assert!(!token.check("bob", "t0ke"));
        // A configured user: only that user, with that password (the token does not do).
        let user = ConsoleAuth {
            token: Some(secret("t0ken")),
            user: Some(("ops".into(), secret("pw"))),
            public_address: true,
        };
        assert!(user.check("ops", "pw"));
        assert!(!user.check("bob", "pw"));
        assert!(!user.check("ops", "t0ken"));
    }

    #[test]
    fn the_operations_time_zone() {
        let set = |z: &str| ConsoleSettings {
            time_zone: Some(z.into()),
        };
        assert_eq!(set("Asia/Shanghai").zone().0, chrono_tz::Asia::Shanghai);
        assert!(set("Asia/Shanghai").check().is_empty());
        let bad = set("Mars/Olympus");
        assert_eq!(bad.check().len(), 1);
        assert!(bad.check()[0].to_string().contains("console.time_zone"));
        let link = std::path::Path::new("/usr/share/zoneinfo/Europe/Berlin");
        assert_eq!(
            machine_time_zone(None, Some(link)),
            Some(chrono_tz::Europe::Berlin)
        );
        assert_eq!(
            machine_time_zone(Some(":America/New_York"), Some(link)),
            Some(chrono_tz::America::New_York)
        );
        assert_eq!(machine_time_zone(None, None), None);
        assert_eq!(
            machine_time_zone(None, Some(std::path::Path::new("/etc/weird"))),
            None
        );
    }

    #[test]
    fn session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; repayd_console=abc; b=2"),
        );
        assert_eq!(session_cookie(&headers).as_deref(), Some("abc"));
        assert_eq!(session_cookie(&HeaderMap::new()), None);
    }

    #[test]
    fn every_page_template_compiles() {
        let env = templates();
        for (name, _) in TEMPLATES {
            env.get_template(name)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
