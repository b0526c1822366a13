//! Delayed jobs (API-topics 7): schedule, cancel, the job-queue creation route.
//! (Being written: every route answers 404 until then.)

use super::topic::{Fail, Refuse, refuse};
use crate::conn::{Conn, Stream};
use crate::http::request::TopicHeaders;
use crate::server::Ctx;
use crate::topics::auth::Auth;
use crate::topics::hub::Hub;
use crate::topics::route::{Params, TRoute};

/// The head-only checks of these routes, in the contract's order.
pub(super) fn head_checks(
    _hub: &Hub,
    _r: &TRoute,
    _params: &Params,
    _h: &TopicHeaders,
    _auth: &Auth,
) -> Result<(), Refuse> {
    Ok(())
}

impl<S: Stream> Conn<S> {
    pub(super) fn jobs(
        &mut self,
        _ctx: &mut Ctx,
        _r: &TRoute,
        _params: &Params,
        _h: &TopicHeaders,
        _body: &mut Vec<u8>,
    ) -> Result<(), Fail> {
        Err(Fail::Refused(refuse(404, "Not Found")))
    }
}
