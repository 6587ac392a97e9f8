//! The page and the player, built into the binary. Text and wasm go out gzipped when the browser
//! accepts it, never compressed per request (the player's wasm cost 30-55 ms of CPU each time):
//! the player was gzipped by build.rs with zopfli (430 KB, 153 KB gzipped where zlib's best
//! gives 161), the small files are gzipped on first request and kept. An ETag lets a reload
//! revalidate instead of downloading again.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::sync::{LazyLock, OnceLock};

/// Static files (the page and its assets).
#[derive(rust_embed::RustEmbed)]
#[folder = "../static/"]
struct StaticFiles;

/// The player (client/ built for wasm32 by build.rs, with its JS bindings), under `player/`,
/// with the gzipped copies build.rs made.
const PLAYER_FILES: [PlayerFile; 3] = [
    (
        "player/scopecast_client.js",
        include_bytes!(concat!(env!("OUT_DIR"), "/player/scopecast_client.js")),
        Some(include_bytes!(concat!(env!("OUT_DIR"), "/player/scopecast_client.js.gz"))),
    ),
    (
        "player/scopecast_client_bg.wasm",
        include_bytes!(concat!(env!("OUT_DIR"), "/player/scopecast_client_bg.wasm")),
        Some(include_bytes!(concat!(env!("OUT_DIR"), "/player/scopecast_client_bg.wasm.gz"))),
    ),
    ("player/scopecast_client.d.ts", include_bytes!(concat!(env!("OUT_DIR"), "/player/scopecast_client.d.ts")), None),
];

/// Path, bytes, gzipped bytes.
type PlayerFile = (&'static str, &'static [u8], Option<&'static [u8]>);

struct Asset {
    body: Bytes,
    mime: &'static str,
    etag: HeaderValue,
    /// Filled on the first request that accepts gzip; `None` for files not worth compressing.
    gzipped: OnceLock<Option<Bytes>>,
}

static ASSETS: LazyLock<HashMap<String, Asset>> = LazyLock::new(|| {
    let embedded = StaticFiles::iter().filter_map(|path| StaticFiles::get(&path).map(|f| (path.into_owned(), cow_bytes(f.data), None)));
    let player = PLAYER_FILES.iter().map(|(path, data, gz)| ((*path).to_owned(), Bytes::from_static(data), gz.map(Bytes::from_static)));
    embedded
        .chain(player)
        .map(|(path, body, gz)| {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            body.hash(&mut hasher);
            let etag = HeaderValue::from_str(&format!("\"{:016x}\"", hasher.finish())).expect("hex is a valid header value");
            let gzipped = OnceLock::new();
            if gz.is_some() {
                let _ = gzipped.set(gz);
            }
            let mime = mime(&path);
            (path, Asset { mime, etag, body, gzipped })
        })
        .collect()
});

/// Release builds embed the files (borrowed, no copy); debug builds read them from disk.
fn cow_bytes(data: std::borrow::Cow<'static, [u8]>) -> Bytes {
    match data {
        std::borrow::Cow::Borrowed(b) => Bytes::from_static(b),
        std::borrow::Cow::Owned(v) => Bytes::from(v),
    }
}

fn mime(path: &str) -> &'static str {
    match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ts") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

fn compressible(mime: &str) -> bool {
    mime.starts_with("text/") || mime == "application/wasm" || mime == "image/svg+xml"
}

/// The file at `path` (relative to /static/), or `None`.
pub async fn serve(path: &str, request: &HeaderMap) -> Option<Response> {
    let asset: &'static Asset = ASSETS.get(path)?;
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.mime));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::ETAG, asset.etag.clone());
    let compressible = compressible(asset.mime);
    if compressible {
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
    if request.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok()).any(|v| etag_matches(v, &asset.etag)) {
        return Some((StatusCode::NOT_MODIFIED, headers).into_response());
    }
    if compressible && accepts_gzip(request) {
        // Compressing the wasm takes ~50 ms, once: off the async workers.
        let gzipped = match asset.gzipped.get() {
            Some(g) => g.clone(),
            None => tokio::task::spawn_blocking(move || asset.gzipped.get_or_init(|| gzip(&asset.body)).clone()).await.ok().flatten(),
        };
        if let Some(body) = gzipped {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            return Some((StatusCode::OK, headers, body).into_response());
        }
    }
    Some((StatusCode::OK, headers, asset.body.clone()).into_response())
}

fn gzip(data: &[u8]) -> Option<Bytes> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 2), flate2::Compression::best());
    encoder.write_all(data).ok()?;
    encoder.finish().ok().filter(|gz| gz.len() < data.len()).map(Bytes::from)
}

/// `If-None-Match`: a list of entity tags (weak ones compare weakly, as RFC 9110 says for GET), or `*`.
fn etag_matches(if_none_match: &str, etag: &HeaderValue) -> bool {
    let ours = etag.to_str().unwrap_or_default();
    if_none_match.split(',').map(str::trim).any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == ours)
}

/// `Accept-Encoding` names gzip (or `*`) without `q=0`.
fn accepts_gzip(request: &HeaderMap) -> bool {
    request.get_all(header::ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let coding = parts.next().unwrap_or_default();
        let refused = parts.filter_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q="))).any(|q| q.parse::<f32>().is_ok_and(|q| q <= 0.0));
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (k.clone(), HeaderValue::from_str(v).expect("value"))).collect()
    }

    #[test]
    fn accept_encoding_is_read_as_browsers_and_proxies_write_it() {
        assert!(accepts_gzip(&headers(&[(header::ACCEPT_ENCODING, "gzip, deflate, br, zstd")])));
        assert!(accepts_gzip(&headers(&[(header::ACCEPT_ENCODING, "br;q=1.0, GZIP;q=0.5")])));
        assert!(accepts_gzip(&headers(&[(header::ACCEPT_ENCODING, "*")])));
        assert!(!accepts_gzip(&headers(&[(header::ACCEPT_ENCODING, "gzip;q=0, br")])));
        assert!(!accepts_gzip(&headers(&[(header::ACCEPT_ENCODING, "identity")])));
        assert!(!accepts_gzip(&headers(&[(header::ACCEPT_ENCODING, "x-gzip-ish")])));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[tokio::test]
    async fn files_go_out_gzipped_once_and_revalidate_by_etag() {
        // A small file: compressed on first request and kept.
        let css = serve("player.css", &headers(&[(header::ACCEPT_ENCODING, "gzip")])).await.expect("served");
        assert_eq!(css.headers().get(header::CONTENT_ENCODING).map(|v| v.as_bytes()), Some(&b"gzip"[..]));
        let body = axum::body::to_bytes(css.into_body(), usize::MAX).await.expect("body");
        assert_eq!(ASSETS["player.css"].gzipped.get().cloned().flatten(), Some(body));

        // The player: gzipped at build time.
        let plain = serve("player/scopecast_client_bg.wasm", &HeaderMap::new()).await.expect("the player is built in");
        assert_eq!(plain.status(), StatusCode::OK);
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        let etag = plain.headers().get(header::ETAG).expect("etag").clone();

        let gz = serve("player/scopecast_client_bg.wasm", &headers(&[(header::ACCEPT_ENCODING, "gzip")])).await.expect("served");
        assert_eq!(gz.headers().get(header::CONTENT_ENCODING).map(|v| v.as_bytes()), Some(&b"gzip"[..]));
        let first = axum::body::to_bytes(gz.into_body(), usize::MAX).await.expect("body");
        let mut decoded = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&first[..]), &mut decoded).expect("valid gzip");
        assert_eq!(decoded.len(), ASSETS["player/scopecast_client_bg.wasm"].body.len());

        let cached = serve("player/scopecast_client_bg.wasm", &headers(&[(header::IF_NONE_MATCH, etag.to_str().expect("ascii"))])).await.expect("served");
        assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
        let stale = serve("player/scopecast_client_bg.wasm", &headers(&[(header::IF_NONE_MATCH, "\"0000\"")])).await.expect("served");
        assert_eq!(stale.status(), StatusCode::OK);
        // PNGs are already compressed.
        assert!(!compressible(mime("docs/x.png")));
        assert!(serve("no/such/file.js", &HeaderMap::new()).await.is_none());
    }
}
