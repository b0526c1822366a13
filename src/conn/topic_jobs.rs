//! Delayed jobs on a connection (API-topics.md section 7): schedule, cancel, and kateway's
//! job-queue creation. The store thread's scheduler stores, fires and forgets them.

use super::topic::{Fail, Refuse, TopicWait, refuse};
use super::topic_checks::{charge_appid, key_tag, names, text_of};
use crate::conn::{Conn, State, Stream};
use crate::http::request::TopicHeaders;
use crate::server::Ctx;
use crate::server::mailbox::{JobDone, Msg, TopicEv, post_or_hold};
use crate::server::unix_ms;
use crate::store::StoreFail;
use crate::topics::auth::Auth;
use crate::topics::engine::TReq;
use crate::topics::hub::Hub;
use crate::topics::jobs;
use crate::topics::route::{Params, TRoute};
use crate::topics::scheduler::{JobAdd, JobCancel};

/// When the job is due: `due` wins over `delay`; a bad one (or a due in the past) is a 400.
fn due_of(params: &Params) -> Result<u64, Refuse> {
    jobs::due_ms(params.get("due"), params.get("delay"), unix_ms()).map_err(|t| refuse(400, t))
}

fn id_of(params: &Params) -> Result<i64, Refuse> {
    params.get("id").and_then(jobs::job_id).ok_or(refuse(400, "invalid job id"))
}

/// The head-only checks of these routes, in the contract's order: names, then for an add its
/// time (before auth), auth and the appid's charge, size, key and tag; for a cancel auth and
/// the charge, then the id. Runs once per request: it charges.
pub(super) fn head_checks(
    hub: &Hub,
    r: &TRoute,
    params: &Params,
    h: &TopicHeaders,
    auth: &Auth,
) -> Result<(), Refuse> {
    let (appid, pubkey) = (text_of(&h.appid), text_of(&h.pubkey));
    match r {
        TRoute::JobAdd { topic, ver } => {
            names(None, topic, ver)?;
            due_of(params)?;
            auth.check_pub(appid, pubkey, topic).map_err(|t| refuse(401, t))?;
            charge_appid(hub, appid)?;
            let length = h.length.unwrap_or(0);
            if length > hub.cfg.job_max_bytes {
                return Err(refuse(413, "too big message"));
            }
            // An empty body is `too small message` first (4.1's order), judged once read.
            if length > 0 { key_tag(hub, params, h) } else { Ok(()) }
        }
        TRoute::JobCancel { topic, ver } => {
            names(None, topic, ver)?;
            auth.check_pub(appid, pubkey, topic).map_err(|t| refuse(401, t))?;
            charge_appid(hub, appid)?;
            id_of(params).map(|_| ())
        }
        TRoute::JobQueue { appid: owner, topic, ver } => {
            names(Some(owner), topic, ver)?;
            auth.check_admin(appid, pubkey).map_err(|t| refuse(401, t))?;
            charge_appid(hub, appid)
        }
        _ => Ok(()),
    }
}

impl<S: Stream> Conn<S> {
    /// A job route after the head checks.
    pub(super) fn jobs(
        &mut self,
        ctx: &mut Ctx,
        r: &TRoute,
        params: &Params,
        h: &TopicHeaders,
        body: &mut Vec<u8>,
    ) -> Result<(), Fail> {
        let shared = ctx.shared.clone();
        let Some(hub) = shared.hub.as_ref() else { return Err(refuse(404, "Not Found").into()) };
        let owner = String::from_utf8_lossy(text_of(&h.appid)).into_owned();
        let (to, s) = (self.id, shared.clone());
        let answer = move |result: Result<JobDone, StoreFail>| {
            post_or_hold(&s, to.worker, Msg::Topic { to, ev: TopicEv::Job(result) });
        };
        let req = match r {
            TRoute::JobAdd { topic, ver } => {
                let due_ms = due_of(params)?;
                if body.len() > hub.cfg.job_max_bytes {
                    return Err(refuse(413, "too big message").into());
                }
                if body.is_empty() {
                    return Err(refuse(400, "too small message").into());
                }
                key_tag(hub, params, h)?;
                let raw = format!("{owner}.{topic}.{ver}");
                hub.get(&raw).ok_or(Fail::Missing)?;
                TReq::JobAdd(JobAdd {
                    topic: raw,
                    due_ms,
                    key: params.get("key").unwrap_or_default().to_vec(),
                    tag: h.tag.clone().unwrap_or_default(),
                    payload: std::mem::take(body),
                    done: Box::new(move |r| answer(r.map(JobDone::Added))),
                })
            }
            TRoute::JobCancel { topic, ver } => TReq::JobCancel(JobCancel {
                topic: format!("{owner}.{topic}.{ver}"),
                id: id_of(params)?,
                done: Box::new(move |r| {
                    answer(r.map(|gone| if gone { JobDone::Cancelled } else { JobDone::NotFound }))
                }),
            }),
            TRoute::JobQueue { appid, topic, ver } => {
                // Topics are job queues already: nothing to create.
                if hub.get(&format!("{appid}.{topic}.{ver}")).is_none() {
                    return Err(refuse(400, "invalid topic").into());
                }
                self.topic_ok(ctx, 201, "");
                return Ok(());
            }
            _ => return Err(refuse(404, "Not Found").into()),
        };
        hub.send(req);
        self.state = State::Topic(TopicWait::Job);
        self.set_deadline(None, ctx);
        Ok(())
    }

    /// The store's answer to an add or a cancel.
    pub(super) fn job_answer(&mut self, ctx: &mut Ctx, result: Result<JobDone, StoreFail>) {
        match result {
            Ok(JobDone::Added(id)) => self.topic_ok(ctx, 201, &format!("X-Job-Id: {id}\r\n")),
            Ok(JobDone::Cancelled) => self.topic_ok(ctx, 200, ""),
            Ok(JobDone::NotFound) => self.topic_error(ctx, 409, "job not found"),
            Err(f) => self.store_failed(ctx, f),
        }
    }
}
