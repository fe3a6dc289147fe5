//! The coordinator's web side, on its HTTP port (`serve --http-listen`;
//! by default the gRPC port + 1): read-only pages for people and
//! `/metrics` for Prometheus.
//!
//! | path | what |
//! |---|---|
//! | `/` | jobs (state, progress) and workers (state, running, done) |
//! | `/jobs/{id}` | the job's report, the same page as `coordinator report`; it reloads every 2 s while the job runs |
//! | `/gallery` | the final line searches of every finished job |
//! | `/metrics` | Prometheus text format ([`crate::metrics`]); no token, like health checks |
//! | `/login` | a form for the client token (or `/login?token=…&next=/jobs/…` once): it is kept in an HTTP-only cookie |
//!
//! With tokens configured every page needs a client token: the cookie set
//! by `/login`, or an `Authorization: Bearer` header. Pages are rendered
//! from the same `JobStatus`/`JobResults` the gRPC API answers, so what a
//! browser shows is what `coordinator report` writes.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Form, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use ridgeline_common::proto::v1 as pb;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::auth::{Role, Tokens};
use crate::report::html::{escape, page, url_segment};
use crate::scheduler::{is_terminal, Scheduler};

const COOKIE: &str = "ridgeline_token";

#[derive(Clone)]
pub struct Web {
    pub scheduler: Arc<Scheduler>,
    pub tokens: Arc<Tokens>,
}

/// The routes (see the module docs).
pub fn router(web: Web) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/jobs/{id}", get(job_page))
        // The gallery's cards link to `<job>/report.html`.
        .route("/{id}/report.html", get(job_page))
        .route("/gallery", get(gallery))
        .route("/metrics", get(metrics))
        .route("/login", get(login_form).post(login))
        .with_state(web)
}

/// Serves the pages on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    web: Web,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(?addr, "dashboard and /metrics serving");
    axum::serve(listener, router(web))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// A page error: the status and a sentence.
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = page(
            "Ridgeline",
            &format!("<h1>{}</h1><p>{}</p>", self.0, escape(&self.1)),
        );
        (self.0, Html(body)).into_response()
    }
}

impl From<crate::error::CoordError> for Failure {
    fn from(e: crate::error::CoordError) -> Self {
        use crate::error::CoordError as E;
        let code = match &e {
            E::NotFound(_) => StatusCode::NOT_FOUND,
            E::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        Failure(code, e.to_string())
    }
}

/// `None` lets the request through (tokens are off, or it carries a
/// client token); otherwise the answer to send instead (the login form,
/// or a refusal).
fn refusal(web: &Web, headers: &HeaderMap) -> Option<Response> {
    if web.tokens.is_open() {
        return None;
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().strip_prefix(&format!("{COOKIE}=")))
        .next();
    match bearer.or(cookie).and_then(|t| web.tokens.role_of(t)) {
        Some(Role::Client) => None,
        Some(Role::Worker) => Some(
            Failure(
                StatusCode::FORBIDDEN,
                "a worker token may not read the dashboard".into(),
            )
            .into_response(),
        ),
        None if bearer.is_some() => {
            Some(Failure(StatusCode::UNAUTHORIZED, "the token is not valid".into()).into_response())
        }
        None => Some(Redirect::to("/login").into_response()),
    }
}

/// Runs a store query off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> crate::Result<T> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(Failure::from)
}

fn nav() -> &'static str {
    "<p class=\"muted\"><a href=\"/\">Jobs and workers</a> · <a href=\"/gallery\">Gallery</a> · \
     <a href=\"/metrics\">Metrics</a></p>"
}

fn state_name(state: i32) -> &'static str {
    match pb::JobState::try_from(state) {
        Ok(pb::JobState::Queued) => "queued",
        Ok(pb::JobState::Running) => "running",
        Ok(pb::JobState::Succeeded) => "succeeded",
        Ok(pb::JobState::Failed) => "failed",
        Ok(pb::JobState::Cancelled) => "cancelled",
        _ => "unknown",
    }
}

async fn index(State(web): State<Web>, headers: HeaderMap) -> Response {
    if let Some(r) = refusal(&web, &headers) {
        return r;
    }
    let s = web.scheduler.clone();
    let data = blocking(move || Ok((s.list_jobs()?, s.workers()?))).await;
    let (jobs, workers) = match data {
        Ok(d) => d,
        Err(f) => return f.into_response(),
    };
    let mut b = String::from("<h1>Ridgeline</h1>");
    b.push_str(nav());
    b.push_str(&format!("<h2>Jobs ({})</h2>", jobs.len()));
    b.push_str(
        "<table><tr><th>job</th><th>name</th><th>kind</th><th>state</th>\
         <th class=\"num\">tasks done</th><th>error</th></tr>",
    );
    for j in jobs.iter().rev() {
        b.push_str(&format!(
            "<tr><td><a href=\"/jobs/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"num\">{}/{}</td><td>{}</td></tr>",
            url_segment(&j.job_id),
            escape(&j.job_id),
            escape(&j.name),
            escape(&j.kind),
            state_name(j.state),
            j.stages.iter().map(|s| s.done).sum::<u32>(),
            j.stages.iter().map(|s| s.total).sum::<u32>(),
            escape(&j.error),
        ));
    }
    b.push_str("</table>");
    b.push_str(&format!("<h2>Workers ({})</h2>", workers.len()));
    b.push_str(
        "<table><tr><th>name</th><th>device</th><th>state</th><th class=\"num\">slots</th>\
         <th class=\"num\">running</th><th class=\"num\">tasks done</th><th>note</th></tr>",
    );
    for w in &workers {
        b.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            escape(&w.name),
            escape(&w.device),
            escape(&w.state),
            w.slots,
            w.running,
            w.tasks_done,
            escape(&w.quarantine_reason),
        ));
    }
    b.push_str("</table>");
    let running = jobs.iter().any(|j| !is_terminal(state_name(j.state)));
    Html(live(page("Ridgeline", &b), running)).into_response()
}

/// Adds a 2-second reload to a page whose content is still changing.
fn live(html: String, changing: bool) -> String {
    if changing {
        html.replacen(
            "<head>\n",
            "<head>\n<meta http-equiv=\"refresh\" content=\"2\">\n",
            1,
        )
    } else {
        html
    }
}

async fn job_page(State(web): State<Web>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(r) = refusal(&web, &headers) {
        return r;
    }
    let s = web.scheduler.clone();
    match blocking(move || Ok((s.job_status(&id)?, s.results(&id)?))).await {
        Ok((status, results)) => {
            let html = crate::report::report_html(&status, &results)
                .replacen("<main>\n", &format!("<main>\n{}", nav()), 1)
                // No files beside a served page (`coordinator report` writes them).
                .replacen(crate::report::DATA_NOTE, "", 1);
            let running = !is_terminal(state_name(status.state));
            Html(live(html, running)).into_response()
        }
        Err(f) => f.into_response(),
    }
}

async fn gallery(State(web): State<Web>, headers: HeaderMap) -> Response {
    if let Some(r) = refusal(&web, &headers) {
        return r;
    }
    let s = web.scheduler.clone();
    let entries = blocking(move || {
        let mut entries = vec![];
        for status in s.list_jobs()? {
            if !crate::client::in_gallery(&status) {
                continue;
            }
            let results = s.results(&status.job_id)?;
            if let Some(e) = crate::report::gallery_entry(&status, &results) {
                entries.push(e);
            }
        }
        Ok(entries)
    })
    .await;
    match entries {
        Ok(entries) => {
            let html = crate::report::gallery_html(&entries);
            Html(html.replacen("<main>\n", &format!("<main>\n{}", nav()), 1)).into_response()
        }
        Err(f) => f.into_response(),
    }
}

async fn metrics(State(web): State<Web>) -> Response {
    let s = web.scheduler.clone();
    match blocking(move || s.snapshot()).await {
        Ok(snapshot) => {
            let mut r = web.scheduler.metrics().render(&snapshot).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        Err(f) => f.into_response(),
    }
}

#[derive(Deserialize)]
struct TokenForm {
    token: Option<String>,
    /// Where to go after logging in: a path on this server.
    next: Option<String>,
}

/// `next` if it is a path here (`/…`, not `//host/…`), else `/`.
fn local_path(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n,
        _ => "/",
    }
}

async fn login_form(State(web): State<Web>, Query(q): Query<TokenForm>) -> Response {
    if q.token.is_some() {
        // `/login?token=…` once (scripts, a headless browser); the address
        // bar is cleaned by the redirect.
        return login(State(web), Form(q)).await;
    }
    let body = format!(
        "<h1>Ridgeline</h1><form method=\"post\" action=\"/login\">\
         <input type=\"hidden\" name=\"next\" value=\"{}\">\
         <p>Client token: <input type=\"password\" name=\"token\" autofocus> \
         <button type=\"submit\">Open</button></p></form>",
        escape(local_path(q.next.as_deref()))
    );
    Html(page("Ridgeline · log in", &body)).into_response()
}

async fn login(State(web): State<Web>, Form(form): Form<TokenForm>) -> Response {
    let next = local_path(form.next.as_deref()).to_string();
    let token = form.token.unwrap_or_default();
    let token = token.trim();
    match web.tokens.role_of(token) {
        Some(Role::Client) => {}
        _ if web.tokens.is_open() => return Redirect::to(&next).into_response(),
        _ => {
            return Failure(
                StatusCode::UNAUTHORIZED,
                "that is not a client token of this coordinator".into(),
            )
            .into_response()
        }
    }
    let Ok(cookie) = HeaderValue::from_str(&format!(
        "{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
    )) else {
        return Failure(StatusCode::BAD_REQUEST, "the token cannot be stored".into())
            .into_response();
    };
    let mut r = Redirect::to(&next).into_response();
    r.headers_mut().insert(header::SET_COOKIE, cookie);
    r
}
