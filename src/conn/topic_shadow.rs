//! Shadow queues and bury (API-topics 6): a group's retry and dead queues, and moving a
//! message there. (Being written: every route answers 404 until then.)

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
    pub(super) fn bury(
        &mut self,
        _ctx: &mut Ctx,
        _raw: &str,
        _params: &Params,
        _h: &TopicHeaders,
        _body: &mut Vec<u8>,
    ) -> Result<(), Fail> {
        Err(Fail::Refused(refuse(404, "Not Found")))
    }

    pub(super) fn create_shadow(
        &mut self,
        _ctx: &mut Ctx,
        _raw: &str,
        _group: &str,
        _params: &Params,
        _h: &TopicHeaders,
    ) -> Result<(), Fail> {
        Err(Fail::Refused(refuse(404, "Not Found")))
    }
}
