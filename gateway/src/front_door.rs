//! What every S3 request passes before s3s sees it: one table of signing
//! rules for every way a request can be signed (the time window, the expiry
//! cap, the headers a signature must cover, the credential scope), and the
//! size limit and digests of the bodies the server parses whole. s3s checks
//! the signatures themselves; these are the rules AWS adds around them.
//!
//! | way in            | time window                   | expiry cap        | must be signed      | scope          |
//! |-------------------|-------------------------------|-------------------|---------------------|----------------|
//! | SigV4 header      | `x-amz-date` ± 15 min         | —                 | `host`, `x-amz-date`| region, `s3`   |
//! | SigV4 aws-chunked | as SigV4 header               | —                 | as SigV4 header     | region, `s3`   |
//! | SigV4 presigned   | `X-Amz-Date` ≤ now + 15 min   | `X-Amz-Expires` ≤ 7 days | `host`       | region, `s3`   |
//! | SigV2 header      | `x-amz-date` or `Date` ± 15 min | —               | the date            | —              |
//! | SigV2 presigned   | `Expires` in the future       | `Expires` ≤ now + 7 days | `Expires`    | —              |
//! | POST policy       | policy not expired            | expiration ≤ now + 7 days | the policy  | region (v4)    |
//!
//! SigV4's window and presigned expiry, and the POST policy's expiration
//! and date, are checked by s3s; the POST policy's cap and region by the
//! gateway's `post_object`, the only place its form is parsed.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::body::Frame;
use hyper::{HeaderMap, Method, Request, Response, Uri};
use s3s::dto::{Timestamp, TimestampFormat};
use s3s::{s3_error, S3Error, S3ErrorCode};

use crate::checksums::{checksum_of, Algorithm, ALGORITHMS};

/// How far a signed request's date may be from the server's clock.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);
/// The longest a presigned URL or POST policy may stay valid, as AWS.
pub const MAX_PRESIGNED_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);
/// The largest body the server reads whole to parse (XML configurations,
/// DeleteObjects, CompleteMultipartUpload). The largest legitimate ones are
/// a DeleteObjects of 1000 keys of 1 KiB each escaped five times over, about
/// 5.3 MB, and a CompleteMultipartUpload of 10,000 parts with checksums,
/// about 3.5 MB.
pub const MAX_PARSED_BODY: usize = 8 * 1024 * 1024;

const SIGV4: &str = "AWS4-HMAC-SHA256";

/// How a request says it is signed.
#[derive(Debug, PartialEq, Eq)]
enum Signing<'a> {
    V4Header {
        credential: &'a str,
        signed_headers: &'a str,
    },
    V4Presigned,
    V2Header,
    V2Presigned,
    /// A browser form (POST policy) or an anonymous request: nothing here
    /// to check before s3s.
    Other,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> // A
{
    headers.get(name).and_then(|value| value.to_str().ok())
}

/// The decoded value of a query parameter.
fn query_param(uri: &Uri, name: &str) -> Option<String> // A
{
    let query = uri.query()?;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| urlencoding::decode(value).map_or_else(|_| value.to_string(), |v| v.into_owned()))
    })
}

fn has_query_param(uri: &Uri, name: &str) -> bool // A
{
    uri.query().is_some_and(|query| query.split('&').any(|pair| pair.split('=').next() == Some(name)))
}

fn signing_of<'a>(uri: &Uri, headers: &'a HeaderMap) -> Signing<'a> // PA
{
    if has_query_param(uri, "X-Amz-Signature") {
        return Signing::V4Presigned;
    }
    if has_query_param(uri, "Signature") {
        return Signing::V2Presigned;
    }
    match header(headers, "authorization") {
        Some(value) if value.starts_with(SIGV4) => {
            let field = |name: &str| {
                value[SIGV4.len()..]
                    .split(',')
                    .find_map(|part| part.trim().strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
                    .unwrap_or("")
            };
            Signing::V4Header { credential: field("Credential"), signed_headers: field("SignedHeaders") }
        }
        Some(value) if value.starts_with("AWS ") => Signing::V2Header,
        _ => Signing::Other,
    }
}

/// What a SigV4 credential scope must name: `KEY/DATE/REGION/s3/aws4_request`.
fn check_scope(credential: &str, region: &str, malformed: impl Fn(String) -> S3Error) -> Result<(), S3Error> // PA
{
    let parts: Vec<&str> = credential.split('/').collect();
    let [_, _, scope_region, service, terminator] = parts[..] else {
        return Err(malformed("the credential must be KEY/DATE/REGION/SERVICE/aws4_request".into()));
    };
    if scope_region != region {
        return Err(malformed(format!("the region '{scope_region}' is wrong; expecting '{region}'")));
    }
    if service != "s3" {
        return Err(malformed(format!("the service '{service}' is wrong; expecting 's3'")));
    }
    if terminator != "aws4_request" {
        return Err(malformed(format!("the credential must end in aws4_request, not '{terminator}'")));
    }
    Ok(())
}

/// A SigV2 date: RFC 1123 as `Date` carries it (Go's clients, rclone among
/// them, name the zone `UTC` rather than `GMT`), RFC 2822 with a numeric
/// zone, or ISO 8601 basic.
fn parse_v2_date(value: &str) -> Option<SystemTime> // PA
{
    let value = value.trim();
    let gmt = value.strip_suffix(" UTC").map(|rest| format!("{rest} GMT"));
    if let Ok(at) = Timestamp::parse(TimestampFormat::HttpDate, gmt.as_deref().unwrap_or(value)) {
        return Some(SystemTime::from(time::OffsetDateTime::from(at)));
    }
    if let Ok(at) = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822) {
        return Some(SystemTime::from(at));
    }
    let basic = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let at = time::PrimitiveDateTime::parse(value, basic).ok()?.assume_utc();
    Some(SystemTime::from(at))
}

fn too_skewed() -> S3Error // A
{
    s3_error!(RequestTimeTooSkewed, "The difference between the request time and the current time is too large.")
}

/// The signing rules of the table above that s3s does not check itself.
pub fn check_signing(uri: &Uri, headers: &HeaderMap, region: &str, now: SystemTime) -> Result<(), S3Error> // PA
{
    match signing_of(uri, headers) {
        Signing::V4Header { credential, signed_headers } => {
            let malformed = |reason: String| {
                s3_error!(AuthorizationHeaderMalformed, "The authorization header is malformed; {reason}")
            };
            check_scope(credential, region, malformed)?;
            let signed: Vec<&str> = signed_headers.split(';').collect();
            for required in ["host", "x-amz-date"] {
                if !signed.contains(&required) {
                    return Err(malformed(format!("SignedHeaders must include {required}")));
                }
            }
            Ok(())
        }
        Signing::V4Presigned => {
            let malformed =
                |reason: String| s3_error!(AuthorizationQueryParametersError, "Error parsing the query: {reason}");
            let credential = query_param(uri, "X-Amz-Credential").unwrap_or_default();
            check_scope(&credential, region, malformed)?;
            let expires = query_param(uri, "X-Amz-Expires")
                .and_then(|value| value.parse::<u64>().ok())
                .ok_or_else(|| malformed("X-Amz-Expires must be a whole number of seconds".into()))?;
            if expires > MAX_PRESIGNED_EXPIRY.as_secs() {
                return Err(malformed(format!(
                    "X-Amz-Expires must be less than a week (in seconds) that is {}",
                    MAX_PRESIGNED_EXPIRY.as_secs()
                )));
            }
            let signed = query_param(uri, "X-Amz-SignedHeaders").unwrap_or_default();
            if !signed.split(';').any(|name| name == "host") {
                return Err(malformed("X-Amz-SignedHeaders must include host".into()));
            }
            Ok(())
        }
        Signing::V2Header => {
            let date = header(headers, "x-amz-date").or_else(|| header(headers, "date"));
            let at = date.and_then(parse_v2_date).ok_or_else(|| {
                s3_error!(AccessDenied, "AWS authentication requires a valid Date or x-amz-date header")
            })?;
            let skew = now.duration_since(at).unwrap_or_else(|ahead| ahead.duration());
            if skew > MAX_CLOCK_SKEW {
                return Err(too_skewed());
            }
            Ok(())
        }
        Signing::V2Presigned => {
            let seconds = query_param(uri, "Expires")
                .and_then(|value| value.parse::<u64>().ok())
                .ok_or_else(|| s3_error!(AccessDenied, "Expires must be a time in seconds since 1970"))?;
            // A time past what the clock can hold is past any cap (found by
            // the front_door fuzz target: adding it panicked).
            match UNIX_EPOCH.checked_add(Duration::from_secs(seconds)) {
                Some(expires) => check_expiry(expires, now),
                None => Err(too_long_lived()),
            }
        }
        Signing::Other => Ok(()),
    }
}

/// A presigned URL's or POST policy's end of validity: not past, and not
/// further away than the cap.
pub fn check_expiry(expires: SystemTime, now: SystemTime) -> Result<(), S3Error> // PA
{
    if expires <= now {
        return Err(s3_error!(AccessDenied, "Request has expired"));
    }
    if expires.duration_since(now).unwrap_or_default() > MAX_PRESIGNED_EXPIRY {
        return Err(too_long_lived());
    }
    Ok(())
}

fn too_long_lived() -> S3Error // A
{
    s3_error!(
        AccessDenied,
        "A presigned request may be valid for at most {} seconds (7 days)",
        MAX_PRESIGNED_EXPIRY.as_secs()
    )
}

/// Whether s3s will read this request's body whole and parse it: XML
/// configurations of a bucket or object, DeleteObjects, and the POST
/// operations on an object. Object bodies (PUT, UploadPart, a browser
/// form's file) stream instead.
pub fn parses_body(method: &Method, uri: &Uri, headers: &HeaderMap, virtual_hosted: bool) -> bool // A
{
    let path = uri.path().trim_start_matches('/');
    // Path style names the bucket first; virtual-host style has only the key.
    let bucket_only = if virtual_hosted { path.is_empty() } else { !path.trim_end_matches('/').contains('/') };
    if *method == Method::PUT {
        return bucket_only || ["tagging", "acl", "retention", "legal-hold"].iter().any(|q| has_query_param(uri, q));
    }
    if *method == Method::POST {
        let form = header(headers, "content-type").is_some_and(|t| t.starts_with("multipart/form-data"));
        return !form;
    }
    false
}

/// A body in aws-chunked framing: its digests come in trailers, over the
/// decoded bytes, and s3s checks each chunk's signature.
fn is_aws_chunked(headers: &HeaderMap) -> bool // A
{
    header(headers, "x-amz-content-sha256").is_some_and(|v| v.starts_with("STREAMING-"))
}

fn too_large() -> S3Error // A
{
    s3_error!(
        MaxMessageLengthExceeded,
        "Your request was too big: the limit for this request is {MAX_PARSED_BODY} bytes."
    )
}

/// A digest a request names for its body, decoded.
enum NamedDigest {
    Md5(Vec<u8>),
    /// An `x-amz-checksum-*` algorithm and the base64 value sent for it.
    Checksum(&'static Algorithm, String),
}

/// The digests a request names for a body that is to be parsed, with the
/// refusals that need no body: a malformed Content-MD5, or a DeleteObjects
/// that names none (S3 requires one there).
fn named_digests(method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<Vec<NamedDigest>, S3Error> // PA
{
    let mut named = Vec::new();
    if let Some(sent) = header(headers, "content-md5") {
        use base64::Engine as _;
        let digest = base64::engine::general_purpose::STANDARD
            .decode(sent.trim())
            .ok()
            .filter(|digest| digest.len() == 16)
            .ok_or_else(|| s3_error!(InvalidDigest, "The Content-MD5 you specified is not valid."))?;
        named.push(NamedDigest::Md5(digest));
    }
    for algorithm in &ALGORITHMS {
        if let Some(sent) = header(headers, algorithm.header) {
            named.push(NamedDigest::Checksum(algorithm, sent.trim().to_string()));
        }
    }
    let trailer_checksum = header(headers, "x-amz-trailer").is_some_and(|t| t.starts_with("x-amz-checksum-"));
    let delete_objects = *method == Method::POST && has_query_param(uri, "delete");
    if delete_objects && named.is_empty() && !trailer_checksum {
        return Err(s3_error!(
            InvalidRequest,
            "Missing required header for this request: Content-MD5 or an x-amz-checksum-* header"
        ));
    }
    Ok(named)
}

/// Whether a whole parsed body matches the digests its request named; the
/// message of S3's BadDigest if not.
fn verdict_on(named: &[NamedDigest], body: &[u8]) -> Result<(), String> // PA
{
    for digest in named {
        match digest {
            NamedDigest::Md5(sent) => {
                use md5::Digest as _;
                if sent[..] != md5::Md5::digest(body)[..] {
                    return Err("The Content-MD5 you specified did not match what we received.".into());
                }
            }
            NamedDigest::Checksum(algorithm, sent) => {
                if checksum_of(algorithm, body).as_deref() != Some(sent) {
                    let header = algorithm.header;
                    return Err(format!("The {header} you specified did not match the calculated checksum."));
                }
            }
        }
    }
    Ok(())
}

/// The verdict on a parsed body's digests, reached once s3s has read the
/// body; kept in the request's extensions for the operation to consult
/// before it acts.
#[derive(Clone, Default)]
pub struct BodyVerdict(Arc<OnceLock<Result<(), String>>>);

/// Before an operation acts on a parsed body: refuse it if the body did not
/// match the digest its request named. A request that named none, or whose
/// digests are in aws-chunked trailers that s3s checks, passes.
pub fn check_body_verdict(extensions: &hyper::http::Extensions) -> Result<(), S3Error> // PA
{
    match extensions.get::<BodyVerdict>() {
        None => Ok(()),
        Some(verdict) => match verdict.0.get() {
            Some(Ok(())) => Ok(()),
            Some(Err(mismatch)) => Err(S3Error::with_message(S3ErrorCode::BadDigest, mismatch.clone())),
            None => Err(s3_error!(IncompleteBody, "The request body was not read to its end.")),
        },
    }
}

/// A body to be parsed, passed through as s3s reads it, then judged
/// against the digests its request named.
struct DigestedBody<B> {
    body: Pin<Box<B>>,
    named: Vec<NamedDigest>,
    seen: Vec<u8>,
    verdict: BodyVerdict,
}

impl<B> hyper::body::Body for DigestedBody<B>
where
    B: hyper::body::Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> // PA
    {
        let this = &mut *self;
        let polled = this.body.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    // The front door refused declared lengths over the limit,
                    // and hyper holds the body to its declared length.
                    if this.seen.len() + data.len() <= MAX_PARSED_BODY {
                        this.seen.extend_from_slice(data);
                    }
                }
            }
            Poll::Ready(None) => {
                let _ = this.verdict.0.set(verdict_on(&this.named, &this.seen));
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool // A
    {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint // A
    {
        self.body.size_hint()
    }
}

/// An S3 error as the XML answer s3s would give, for refusals made before
/// s3s sees the request.
pub fn error_response(error: &S3Error) -> Response<s3s::Body> // A
{
    let mut xml = Vec::with_capacity(256);
    let mut serializer = s3s::xml::Serializer::new(&mut xml);
    let written = serializer.decl().and_then(|()| s3s::xml::Serialize::serialize(error, &mut serializer));
    if written.is_err() {
        xml = b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InternalError</Code></Error>".to_vec();
    }
    let mut response = Response::new(s3s::Body::from(xml));
    *response.status_mut() = error.status_code().unwrap_or(hyper::StatusCode::BAD_REQUEST);
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/xml"));
    response
}

/// A request s3s may see, or the refusal to answer with.
pub type Admitted = Result<Request<s3s::Body>, S3Error>;

/// What the front door does with a request before s3s: refuse it on its
/// head alone, or pass it on. Nothing is read ahead of s3s, so no body is
/// held before its signature is checked.
pub fn admit(request: Request<s3s::Body>, region: &str, virtual_hosted: bool) -> Admitted // PA
{
    let (mut parts, body) = request.into_parts();
    check_signing(&parts.uri, &parts.headers, region, SystemTime::now())?;
    if !parses_body(&parts.method, &parts.uri, &parts.headers, virtual_hosted) {
        return Ok(Request::from_parts(parts, body));
    }
    match header(&parts.headers, "content-length").map(|v| v.parse::<u64>()) {
        Some(Ok(length)) if length > MAX_PARSED_BODY as u64 => return Err(too_large()),
        Some(Ok(_)) => {}
        Some(Err(_)) => return Err(s3_error!(InvalidArgument, "Content-Length must be a whole number of bytes")),
        // s3s needs the length to parse a body; say so before reading any.
        None if hyper::body::Body::is_end_stream(&body) => {}
        None => return Err(s3_error!(MissingContentLength, "You must provide the Content-Length HTTP header.")),
    }
    let named = if is_aws_chunked(&parts.headers) {
        Vec::new()
    } else {
        named_digests(&parts.method, &parts.uri, &parts.headers)?
    };
    if named.is_empty() {
        return Ok(Request::from_parts(parts, body));
    }
    let verdict = BodyVerdict::default();
    parts.extensions.insert(verdict.clone());
    let body = DigestedBody { body: Box::pin(body), named, seen: Vec::new(), verdict };
    Ok(Request::from_parts(parts, s3s::Body::http_body(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: Method, uri: &str, headers: &[(&'static str, &str)]) -> (Method, Uri, HeaderMap) // A
    {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, value.parse().unwrap_or_else(|e| panic!("{name}: {e}")));
        }
        (method, uri.parse().unwrap_or_else(|e| panic!("{uri}: {e}")), map)
    }

    #[test]
    fn object_bodies_stream_and_configurations_are_parsed_in_both_addressing_styles() // A
    {
        let cases = [
            (Method::PUT, "/b/key", false, false),
            (Method::PUT, "/b/key?x-id=PutObject", false, false),
            (Method::PUT, "/b/key?partNumber=1&uploadId=u", false, false),
            (Method::PUT, "/key", true, false),
            (Method::PUT, "/b?versioning", false, true),
            (Method::PUT, "/?versioning", true, true),
            (Method::PUT, "/b/key?tagging", false, true),
            (Method::POST, "/b?delete", false, true),
            (Method::POST, "/b/key?uploadId=u", false, true),
            (Method::GET, "/b?list-type=2", false, false),
        ];
        for (method, uri, virtual_hosted, parsed) in cases {
            let (method, uri, headers) = head(method, uri, &[]);
            assert_eq!(parses_body(&method, &uri, &headers, virtual_hosted), parsed, "{method} {uri} {virtual_hosted}");
        }
        let (method, uri, headers) = head(Method::POST, "/b", &[("content-type", "multipart/form-data; boundary=x")]);
        assert!(!parses_body(&method, &uri, &headers, false), "a browser form streams its file");
    }

    #[test]
    fn malformed_signing_fields_are_refused_not_panicked_on() // A
    {
        let now = SystemTime::now();
        for (uri, authorization) in [
            ("/b/k", "AWS4-HMAC-SHA256"),
            ("/b/k", "AWS4-HMAC-SHA256 Credential=, SignedHeaders=, Signature="),
            ("/b/k", "AWS4-HMAC-SHA256 Credential=a/b/c/d/e/f/g"),
            ("/b/k", "AWS "),
            ("/b/k?X-Amz-Signature=s&X-Amz-Expires=-1", ""),
            ("/b/k?X-Amz-Signature=s&X-Amz-Expires=99999999999999999999999", ""),
            ("/b/k?Signature=s&Expires=notanumber", ""),
            ("/b/k?Signature=s&Expires=99999999999999999999999", ""),
            // Parses as a u64 but is past what SystemTime holds.
            ("/b/k?Signature=s&Expires=18446744073709551615", ""),
            ("/b/k?Signature=s&Expires=11111111111311111119", ""),
        ] {
            let headers: Vec<(&'static str, &str)> =
                if authorization.is_empty() { vec![] } else { vec![("authorization", authorization)] };
            let (_, uri, headers) = head(Method::GET, uri, &headers);
            assert!(check_signing(&uri, &headers, "us-east-1", now).is_err(), "{uri} {authorization}");
        }
        assert!(parse_v2_date("Sat, 28 Nov 2026 19:00:00 GMT").is_some());
        assert!(parse_v2_date("20261128T190000Z").is_some());
        assert!(parse_v2_date("Sat, 28 Nov 2026 19:00:00 UTC").is_some(), "Go's time.RFC1123");
        assert!(parse_v2_date("Sat, 28 Nov 2026 19:00:00 +0000").is_some());
        assert!(parse_v2_date("yesterday").is_none());
    }
}
