//! The same workload in Redis Streams terms: one stream per partition, `XADD` for a pub,
//! `XREADGROUP ... BLOCK` for a consumer of a group, `XACK` of what it processed written in
//! front of its next read (esub's piggy-back ack).

use super::resp::{self, Value};

/// The field every entry stores its payload under.
const FIELD: &[u8] = b"d";

/// The stream of partition `p` of a run's topic.
pub fn stream(topic: &str, p: usize) -> String {
    format!("{topic}-{p}")
}

/// `XADD <stream> * d <payload>`: the reply is the new entry's id.
pub fn xadd(out: &mut Vec<u8>, stream: &str, payload: &[u8]) {
    resp::command(out, &[b"XADD", stream.as_bytes(), b"*", FIELD, payload]);
}

/// `XGROUP CREATE <stream> <group> 0 MKSTREAM`: the group reads the stream from its start.
pub fn xgroup_create(out: &mut Vec<u8>, stream: &str, group: &str) {
    resp::command(
        out,
        &[b"XGROUP", b"CREATE", stream.as_bytes(), group.as_bytes(), b"0", b"MKSTREAM"],
    );
}

/// `XREADGROUP GROUP <group> <consumer> COUNT <count> BLOCK <ms> STREAMS <streams...> > ...`.
pub fn xreadgroup(
    out: &mut Vec<u8>,
    group: &str,
    consumer: &str,
    count: usize,
    block_ms: u64,
    streams: &[String],
) {
    let (count, block) = (count.to_string(), block_ms.to_string());
    let mut args: Vec<&[u8]> = vec![
        b"XREADGROUP",
        b"GROUP",
        group.as_bytes(),
        consumer.as_bytes(),
        b"COUNT",
        count.as_bytes(),
        b"BLOCK",
        block.as_bytes(),
        b"STREAMS",
    ];
    args.extend(streams.iter().map(|s| s.as_bytes()));
    args.extend(streams.iter().map(|_| b">".as_slice()));
    resp::command(out, &args);
}

/// `XACK <stream> <group> <id>...`: the reply is how many were pending.
pub fn xack(out: &mut Vec<u8>, stream: &str, group: &str, ids: &[Vec<u8>]) {
    let mut args: Vec<&[u8]> = vec![b"XACK", stream.as_bytes(), group.as_bytes()];
    args.extend(ids.iter().map(Vec::as_slice));
    resp::command(out, &args);
}

/// Why an `XREADGROUP` reply could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadReply(pub String);

/// One entry of an `XREADGROUP` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub stream: &'a [u8],
    pub id: &'a [u8],
    pub payload: &'a [u8],
}

/// Walks an `XREADGROUP` reply, calling `each` per entry: an array of
/// `[stream, [[id, [field, value, ...]], ...]]`, or the null array when the block timed out.
pub fn entries(v: &Value, each: &mut dyn FnMut(Entry)) -> Result<(), BadReply> {
    let bad = |what: &str| BadReply(format!("XREADGROUP reply: {what}: {v:?}"));
    let streams = match v {
        Value::Array(None) => return Ok(()),
        Value::Array(Some(s)) => s,
        Value::Error(e) => return Err(BadReply(String::from_utf8_lossy(e).into_owned())),
        _ => return Err(bad("not an array")),
    };
    for s in streams {
        let Value::Array(Some(pair)) = s else { return Err(bad("a stream is not a pair")) };
        let [Value::Bulk(Some(name)), Value::Array(Some(list))] = pair.as_slice() else {
            return Err(bad("a stream is not [name, entries]"));
        };
        for e in list {
            let Value::Array(Some(entry)) = e else { return Err(bad("an entry is not an array")) };
            let [Value::Bulk(Some(id)), Value::Array(Some(fields))] = entry.as_slice() else {
                return Err(bad("an entry is not [id, fields]"));
            };
            let payload = fields.chunks(2).find_map(|kv| match kv {
                [Value::Bulk(Some(k)), Value::Bulk(Some(p))] if *k == FIELD => Some(*p),
                _ => None,
            });
            let payload = payload.ok_or_else(|| bad("an entry without its field"))?;
            each(Entry { stream: name, id, payload });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands() {
        let mut out = Vec::new();
        xadd(&mut out, "t-0", b"p");
        assert_eq!(out, b"*5\r\n$4\r\nXADD\r\n$3\r\nt-0\r\n$1\r\n*\r\n$1\r\nd\r\n$1\r\np\r\n");
        out.clear();
        xreadgroup(&mut out, "g", "c0", 100, 1000, &[stream("t", 0), stream("t", 1)]);
        let text = String::from_utf8(out.clone()).unwrap();
        let words: Vec<&str> = text.split("\r\n").filter(|w| !w.starts_with(['*', '$'])).collect();
        assert_eq!(
            words,
            [
                "XREADGROUP",
                "GROUP",
                "g",
                "c0",
                "COUNT",
                "100",
                "BLOCK",
                "1000",
                "STREAMS",
                "t-0",
                "t-1",
                ">",
                ">",
                ""
            ]
        );
        assert!(text.starts_with("*13\r\n"), "{text}");
        out.clear();
        xack(&mut out, "t-1", "g", &[b"1-0".to_vec(), b"1-1".to_vec()]);
        assert_eq!(
            out,
            b"*5\r\n$4\r\nXACK\r\n$3\r\nt-1\r\n$1\r\ng\r\n$3\r\n1-0\r\n$3\r\n1-1\r\n".as_slice()
        );
        out.clear();
        xgroup_create(&mut out, "t-1", "g");
        assert!(out.ends_with(b"$1\r\n0\r\n$8\r\nMKSTREAM\r\n"));
    }

    #[test]
    fn entries_of_a_reply() {
        let wire = b"*2\r\n*2\r\n$3\r\nt-0\r\n*2\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nd\r\n$2\r\nab\r\n\
            *2\r\n$3\r\n1-1\r\n*2\r\n$1\r\nd\r\n$1\r\nc\r\n*2\r\n$3\r\nt-1\r\n*1\r\n*2\r\n$3\r\n2-0\r\n\
            *4\r\n$1\r\nx\r\n$1\r\ny\r\n$1\r\nd\r\n$1\r\ne\r\n";
        let (v, used) = resp::parse(wire).unwrap().unwrap();
        assert_eq!(used, wire.len());
        let mut got = Vec::new();
        entries(&v, &mut |e| got.push((e.stream.to_vec(), e.id.to_vec(), e.payload.to_vec())))
            .unwrap();
        let want: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> =
            [("t-0", "1-0", "ab"), ("t-0", "1-1", "c"), ("t-1", "2-0", "e")]
                .iter()
                .map(|(s, i, p)| {
                    (s.as_bytes().to_vec(), i.as_bytes().to_vec(), p.as_bytes().to_vec())
                })
                .collect();
        assert_eq!(got, want);
        assert_eq!(entries(&Value::Array(None), &mut |_| panic!()), Ok(()));
        assert!(entries(&Value::Int(1), &mut |_| {}).is_err());
        assert_eq!(
            entries(&Value::Error(b"NOGROUP x"), &mut |_| {}),
            Err(BadReply("NOGROUP x".into()))
        );
    }
}
