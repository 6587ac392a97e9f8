//! The WHIP ingest endpoint (RFC 9725), its whole HTTP contract in one place, on streams
//! configured as `source = "whip"`:
//!
//! `POST /{stream}/whip` (application/sdp offer, bearer token) -> 201 + answer + Location + ETag
//! `GET|HEAD /{stream}/whip` -> 204 (discovery);  `OPTIONS` -> 204 + Accept-Post
//! `PATCH /{stream}/whip/{id}` (application/trickle-ice-sdpfrag) -> 204; ICE restart -> 200
//! `DELETE /{stream}/whip/{id}` -> 200; unknown -> 404
//!
//! Publishers present the stream's `publisher_token` (or, without one, the server's token),
//! never the viewers' token alone: the token middleware leaves these paths to this file.
//! Errors are the WHEP endpoint's: a problem body, 4xx for what the client can fix. The same
//! URLs as MediaMTX's, so OBS and FFmpeg settings carry over.

use super::error::ApiError;
use super::whep::{apply_patch, header_value, offer_refused, read_body, SDP};
use super::AppState;
use crate::ingest::whip::{Endpoint, Publisher};
use crate::lock;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// The stream's WHIP endpoint, once the request's token is checked.
fn endpoint(state: &AppState, name: &str, req: &Request) -> Result<Arc<Endpoint>, ApiError> {
    let stream = state.stream(name)?;
    let Some(endpoint) = state.whip.get(name) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not-a-whip-stream",
            "Not a WHIP stream",
            format!("stream '{name}' takes its video from its {:?} source; publish to a stream configured with source = \"whip\"", stream.info().source),
        ));
    };
    let presented = super::auth::presented(req);
    if !endpoint.admits(presented.as_deref()) {
        return Err(super::auth::refusal(presented.is_some(), "publishing needs the stream's publisher token (Authorization: Bearer ...)"));
    }
    Ok(Arc::clone(endpoint))
}

pub async fn post_offer(State(state): State<Arc<AppState>>, Path(name): Path<String>, req: Request) -> Result<Response, ApiError> {
    let endpoint = endpoint(&state, &name, &req)?;
    let from = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(a)| a.ip());
    if let Some(client) = from {
        if let Err(wait) = lock(&state.session_limiter).check(client, Instant::now()) {
            return Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too-many-requests", "Too many requests", "this client creates sessions too fast")
                .with_retry_after(wait.as_secs().max(1)));
        }
    }
    let offer = read_body(req, SDP).await?;
    let ice_servers = state.engine.ice_servers_for_session();
    let ingest = state.engine.accept_publisher(&offer, &ice_servers).await.map_err(offer_refused)?;
    let answer = ingest.session.answer.clone();
    let id = super::random_token();
    let etag = format!("\"{}\"", super::random_token());
    endpoint.install(Publisher::new(id.clone(), etag.clone(), ingest, from));
    tracing::info!(stream = name, session = %&id[..8], "WHIP publisher session created");

    let mut response = (StatusCode::CREATED, answer).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    h.insert(header::LOCATION, header_value(&format!("/{name}/whip/{id}")));
    h.insert(header::ETAG, header_value(&etag));
    for link in crate::turn::link_values(&ice_servers) {
        h.append(header::LINK, header_value(&link));
    }
    Ok(response)
}

/// GET/HEAD on the endpoint: it exists, and takes offers.
pub async fn endpoint_info(State(state): State<Arc<AppState>>, Path(name): Path<String>, req: Request) -> Result<Response, ApiError> {
    endpoint(&state, &name, &req)?;
    Ok((StatusCode::NO_CONTENT, [(super::whep::ACCEPT_POST, HeaderValue::from_static(SDP))]).into_response())
}

fn publisher(endpoint: &Endpoint, id: &str) -> Result<Arc<Publisher>, ApiError> {
    endpoint.publisher(id).ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "unknown-session", "Unknown session", "no such WHIP session (it ended, was replaced, or never existed)")
    })
}

pub async fn delete_session(State(state): State<Arc<AppState>>, Path((name, id)): Path<(String, String)>, req: Request) -> Result<Response, ApiError> {
    let endpoint = endpoint(&state, &name, &req)?;
    publisher(&endpoint, &id)?;
    if endpoint.end(&id, Some("it ended its session (DELETE)")).await {
        tracing::info!(stream = name, session = %&id[..8.min(id.len())], "WHIP publisher session deleted");
    }
    Ok(StatusCode::OK.into_response())
}

pub async fn patch_session(State(state): State<Arc<AppState>>, Path((name, id)): Path<(String, String)>, req: Request<Body>) -> Result<Response, ApiError> {
    let endpoint = endpoint(&state, &name, &req)?;
    let publisher = publisher(&endpoint, &id)?;
    apply_patch(&publisher.ingest.session, &publisher.etag, req, (&name, &id)).await
}
