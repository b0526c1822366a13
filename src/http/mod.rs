//! HTTP/1.x: request heads and bodies, response heads, query decoding.

pub mod query;
pub mod request;
pub mod response;
