//! A request head and body from arbitrary bytes through the front door, as
//! a client or an attacker sends them: the signing table, the body limits,
//! and the digest check as the body is read. Also the listing continuation
//! token, the one other string the gateway decodes itself. The input is
//! lines: method, URI, headers as `name: value`, an empty line, the body.
#![no_main]

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Uri};
use libfuzzer_sys::fuzz_target;
use ouroboros_gateway::front_door;

fn request(data: &[u8]) -> Option<Request<s3s::Body>> {
    let mut lines = data.split(|b| *b == b'\n');
    let method = Method::from_bytes(lines.next()?).ok()?;
    let uri = Uri::try_from(lines.next()?).ok()?;
    let mut builder = Request::builder().method(method).uri(uri);
    let mut consumed = 0;
    for line in data.split(|b| *b == b'\n').take(2) {
        consumed += line.len() + 1;
    }
    for line in lines {
        consumed += line.len() + 1;
        if line.is_empty() {
            break;
        }
        let split = line.iter().position(|b| *b == b':')?;
        let name = HeaderName::from_bytes(&line[..split]).ok()?;
        let value = HeaderValue::from_bytes(line[split + 1..].trim_ascii()).ok()?;
        builder = builder.header(name, value);
    }
    let body = Bytes::copy_from_slice(data.get(consumed..).unwrap_or_default());
    builder.body(s3s::Body::from(body)).ok()
}

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        let _ = ouroboros_gateway::s3::decode_continuation_token(token);
    }
    let Some(request) = request(data) else { return };
    for virtual_hosted in [false, true] {
        let Some(request) = clone(&request) else { return };
        let Ok(admitted) = front_door::admit(request, "us-east-1", virtual_hosted) else { continue };
        let (parts, body) = admitted.into_parts();
        let read = futures::executor::block_on(body.collect());
        if read.is_ok() {
            let _ = front_door::check_body_verdict(&parts.extensions);
        }
    }
});

fn clone(request: &Request<s3s::Body>) -> Option<Request<s3s::Body>> {
    let mut copy = Request::builder().method(request.method().clone()).uri(request.uri().clone());
    for (name, value) in request.headers() {
        copy = copy.header(name, value);
    }
    let body = request.body().bytes().unwrap_or_default();
    copy.body(s3s::Body::from(body)).ok()
}
