//! Patroni's REST API: which members a Patroni cluster has, their roles, state, lag and
//! timeline (`GET /cluster`), read from the first of several member URLs that answers.
//! A tiny HTTP/1.1 client (GET only, `Connection: close`) over a TcpStream, or over OpenSSL
//! for https. Credentials (HTTP basic auth) come from the environment only
//! (PGBH_PATRONI_USER, PGBH_PATRONI_PASSWORD; the hooks' environment file sets them too).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The environment variables read here (the hooks' environment file may set them).
pub const ENV_KEYS: &[&str] = &["PGBH_PATRONI_USER", "PGBH_PATRONI_PASSWORD", "PGBH_PATRONI_CACERT"];

/// This host's Patroni REST API when PGBH_PATRONI_URL is not set (Patroni's default port).
pub const DEFAULT_LOCAL_URL: &str = "http://127.0.0.1:8008";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// A /cluster answer of a big cluster is a few kB; refuse anything absurd.
const MAX_RESPONSE: u64 = 4 << 20;

/// One member as `GET /cluster` lists it. `role` is Patroni's word: `leader`,
/// `replica`, `sync_standby`, `standby_leader` (a standby cluster's leader); newer versions
/// add `quorum_standby`. `lag` is in bytes; Patroni writes "unknown" when it cannot tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub role: String,
    pub state: String,
    pub host: String,
    pub port: u16,
    pub timeline: Option<u64>,
    pub lag: Option<u64>,
    pub api_url: Option<String>,
}

impl Member {
    pub fn is_leader(&self) -> bool {
        self.role == "leader" || self.role == "standby_leader"
    }

    pub fn is_replica(&self) -> bool {
        matches!(self.role.as_str(), "replica" | "sync_standby" | "quorum_standby")
    }

    pub fn is_sync(&self) -> bool {
        self.role == "sync_standby" || self.role == "quorum_standby"
    }

    /// Replicating: 3.0.2 says `running` for a replica that streams (or replays from the
    /// archive); from 3.0.4 on Patroni says `streaming` (and `in archive recovery`).
    pub fn is_streaming(&self) -> bool {
        self.state == "running" || self.state == "streaming"
    }

    /// `name (role, state, timeline N, lag B)`, for messages.
    pub fn describe(&self) -> String {
        let mut s = format!("{} ({}, {}", self.name, self.role, self.state);
        if let Some(t) = self.timeline {
            s.push_str(&format!(", timeline {}", t));
        }
        if let Some(l) = self.lag {
            s.push_str(&format!(", lag {} bytes", l));
        }
        s.push(')');
        s
    }
}

#[derive(Deserialize)]
struct RawCluster {
    #[serde(default)]
    members: Vec<RawMember>,
}

#[derive(Deserialize)]
struct RawMember {
    name: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    timeline: Option<u64>,
    #[serde(default)]
    lag: Option<serde_json::Value>,
    #[serde(default)]
    api_url: Option<String>,
}

/// The members of a `GET /cluster` answer.
pub fn parse_cluster(body: &str) -> Result<Vec<Member>> {
    let raw: RawCluster =
        serde_json::from_str(body).map_err(|e| err!("Patroni's /cluster answer is not what Patroni sends: {}", e))?;
    Ok(raw
        .members
        .into_iter()
        .map(|m| Member {
            name: m.name,
            role: m.role,
            state: m.state,
            host: m.host.unwrap_or_default(),
            port: m.port.unwrap_or(5432),
            timeline: m.timeline,
            lag: m.lag.and_then(|v| v.as_u64()),
            api_url: m.api_url,
        })
        .collect())
}

/// Which member to back up (`pre --discover patroni=... --discover-role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Leader,
    /// The least-lagged streaming replica (a synchronous standby counts as one).
    Replica,
    /// A synchronous standby (the least-lagged if several).
    Sync,
    /// The least-lagged streaming replica, else the leader.
    Any,
}

impl Want {
    pub fn as_str(self) -> &'static str {
        match self {
            Want::Leader => "leader",
            Want::Replica => "replica",
            Want::Sync => "sync",
            Want::Any => "any",
        }
    }
}

/// The chosen member and, when it is a replica, the leader (where the restore point goes).
#[derive(Debug, Clone)]
pub struct Choice {
    pub member: Member,
    pub leader: Option<Member>,
}

/// Pick the member to back up. Replicas are ranked by lag (unknown last), then by name, so
/// every host choosing from the same answer chooses the same member.
pub fn choose(members: &[Member], want: Want) -> Result<Choice> {
    let leaders: Vec<&Member> = members.iter().filter(|m| m.is_leader() && m.state == "running").collect();
    let leader = match leaders.as_slice() {
        [one] => (*one).clone(),
        [] => {
            return Err(err!(
                "the Patroni cluster has no running leader (members: {}): back up when it has one",
                list(members)
            ))
        }
        _ => return Err(err!("the Patroni cluster has more than one leader (members: {})", list(members))),
    };
    let mut replicas: Vec<&Member> = members
        .iter()
        .filter(|m| m.is_replica() && m.is_streaming())
        .filter(|m| want != Want::Sync || m.is_sync())
        .filter(|m| m.timeline.is_none() || leader.timeline.is_none() || m.timeline == leader.timeline)
        .collect();
    replicas.sort_by(|a, b| (a.lag.unwrap_or(u64::MAX), &a.name).cmp(&(b.lag.unwrap_or(u64::MAX), &b.name)));
    let replica = replicas.first().map(|m| (*m).clone());
    match (want, replica) {
        (Want::Leader, _) | (Want::Any, None) => Ok(Choice { member: leader, leader: None }),
        (_, Some(r)) => Ok(Choice { member: r, leader: Some(leader) }),
        (Want::Sync, None) => Err(err!(
            "--discover-role sync: the Patroni cluster has no streaming synchronous standby on the leader's timeline (members: {}); turn on synchronous_mode or use --discover-role replica",
            list(members)
        )),
        (_, None) => Err(err!(
            "--discover-role replica: the Patroni cluster has no streaming replica on the leader's timeline (members: {}); use --discover-role leader or any",
            list(members)
        )),
    }
}

/// What pre saw of the chosen member, kept in the run dir for post to compare against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub urls: Vec<String>,
    pub member: String,
    pub role: String,
    pub leader: String,
    pub timeline: Option<u64>,
}

impl Seen {
    pub fn new(urls: &[String], c: &Choice) -> Seen {
        Seen {
            urls: urls.to_vec(),
            member: c.member.name.clone(),
            role: c.member.role.clone(),
            leader: c.leader.as_ref().map(|l| l.name.clone()).unwrap_or_else(|| c.member.name.clone()),
            timeline: c.member.timeline,
        }
    }

    /// What changed since pre that makes the backup unusable: the member's role (leader or
    /// not), the leader, or the timeline. None when nothing did.
    pub fn changed(&self, now: &[Member]) -> Option<String> {
        let was = if self.leader == self.member {
            format!("at pre {} was the leader (timeline {})", self.member, tl(self.timeline))
        } else {
            format!(
                "at pre {} was a {} of leader {} (timeline {})",
                self.member,
                self.role,
                self.leader,
                tl(self.timeline)
            )
        };
        let leader_now: Vec<&Member> = now.iter().filter(|m| m.is_leader()).collect();
        let Some(me) = now.iter().find(|m| m.name == self.member) else {
            return Some(format!("{}; now it is not a member of the cluster", was));
        };
        let leader_name = match leader_now.as_slice() {
            [l] => l.name.clone(),
            [] => {
                return Some(format!(
                    "{}; now the cluster has no leader (a failover is under way?): {}",
                    was,
                    list(now)
                ))
            }
            _ => return Some(format!("{}; now the cluster has several leaders: {}", was, list(now))),
        };
        let what = if leader_name != self.leader {
            if leader_name == self.member {
                "a switchover or failover promoted it"
            } else if self.leader == self.member {
                "a switchover or failover demoted it"
            } else {
                "a switchover or failover changed its leader"
            }
        } else if me.timeline.is_some() && self.timeline.is_some() && me.timeline != self.timeline {
            "the timeline changed (a failover and back?)"
        } else if me.is_leader() != (self.leader == self.member) || !me.is_streaming() && !me.is_leader() {
            "its role or state changed"
        } else {
            return None;
        };
        Some(format!("{}: {}; now {} leads, and {}", what, was, leader_name, me.describe()))
    }
}

fn tl(t: Option<u64>) -> String {
    t.map(|t| t.to_string()).unwrap_or_else(|| "?".into())
}

fn list(members: &[Member]) -> String {
    if members.is_empty() {
        return "none".into();
    }
    members.iter().map(Member::describe).collect::<Vec<_>>().join(", ")
}

/// `GET /cluster` from the first URL that answers; returns the URL that answered too.
/// Errors name every URL tried and why it failed.
pub fn cluster(urls: &[String]) -> Result<(String, Vec<Member>)> {
    cluster_with(&Client::from_env()?, urls)
}

/// [`cluster`] with the given credentials and CA.
pub fn cluster_with(client: &Client, urls: &[String]) -> Result<(String, Vec<Member>)> {
    let mut why = Vec::new();
    for url in urls {
        match get(url, "/cluster", client).and_then(|b| parse_cluster(&b)) {
            Ok(m) => return Ok((url.clone(), m)),
            Err(e) => why.push(format!("{}: {}", url, e.msg)),
        }
    }
    if why.is_empty() {
        return Err(Error::usage("no Patroni REST API URL given"));
    }
    Err(err!("no Patroni REST API answered ({})", why.join("; ")))
}

/// The member this host's Patroni speaks for: `given` (PGBH_PATRONI_MEMBER) if set, else the
/// name in `GET /patroni` (newer Patroni versions put it there), else the member whose
/// api_url has the local URL's host and port. 3.0.2's /patroni has no name: with a local URL
/// such as http://127.0.0.1:8008 while Patroni advertises another address, set the name.
pub fn local_member(local_url: &str, members: &[Member], given: Option<&str>) -> Result<String> {
    let known = |n: &str| members.iter().any(|m| m.name == n);
    if let Some(n) = given {
        if !known(n) {
            return Err(err!(
                "PGBH_PATRONI_MEMBER={} is not a member of this Patroni cluster (members: {})",
                n,
                list(members)
            ));
        }
        return Ok(n.to_string());
    }
    let client = Client::from_env()?;
    let body = get(local_url, "/patroni", &client).map_err(|e| e.within(format_args!("{} /patroni", local_url)))?;
    let v: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| err!("{}/patroni: not what Patroni sends: {}", local_url, e))?;
    if let Some(n) = v["patroni"]["name"].as_str().or_else(|| v["name"].as_str()) {
        if known(n) {
            return Ok(n.to_string());
        }
    }
    let u = Url::parse(local_url)?;
    let same = |m: &&Member| {
        m.api_url.as_deref().and_then(|a| Url::parse(a).ok()).is_some_and(|a| a.host == u.host && a.port == u.port)
    };
    match members.iter().find(same) {
        Some(m) => Ok(m.name.clone()),
        None => Err(err!(
            "cannot tell which Patroni member {} is (no member advertises that address, and its /patroni names none): set PGBH_PATRONI_MEMBER to this host's member name",
            local_url
        )),
    }
}

/// How to talk to the REST API: basic auth credentials and the CA for https.
#[derive(Default)]
pub struct Client {
    pub auth: Option<Auth>,
    pub cacert: Option<std::path::PathBuf>,
}

impl Client {
    /// PGBH_PATRONI_USER, PGBH_PATRONI_PASSWORD and PGBH_PATRONI_CACERT.
    pub fn from_env() -> Result<Client> {
        let cacert = std::env::var_os("PGBH_PATRONI_CACERT").filter(|v| !v.is_empty()).map(Into::into);
        Ok(Client { auth: Auth::from_env()?, cacert })
    }
}

/// Basic auth credentials from the environment.
pub struct Auth {
    user: String,
    password: String,
}

impl Auth {
    pub fn from_env() -> Result<Option<Auth>> {
        let user = std::env::var("PGBH_PATRONI_USER").ok().filter(|v| !v.is_empty());
        let password = std::env::var("PGBH_PATRONI_PASSWORD").ok().filter(|v| !v.is_empty());
        match (user, password) {
            (None, None) => Ok(None),
            (Some(user), Some(password)) => Ok(Some(Auth { user, password })),
            (Some(_), None) => Err(Error::usage("PGBH_PATRONI_USER is set but PGBH_PATRONI_PASSWORD is not")),
            (None, Some(_)) => Err(Error::usage("PGBH_PATRONI_PASSWORD is set but PGBH_PATRONI_USER is not")),
        }
    }

    fn header(&self) -> String {
        format!("Authorization: Basic {}\r\n", base64(format!("{}:{}", self.user, self.password).as_bytes()))
    }
}

/// A URL as Patroni's REST API is given: http[s]://host[:port][/prefix].
#[derive(Debug, PartialEq, Eq)]
pub struct Url {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub prefix: String,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url> {
        let bad = |why: &str| Error::usage(format!("Patroni REST API URL {:?}: {}", s, why));
        let (tls, rest) = if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(bad("use http://HOST:PORT or https://HOST:PORT"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(bad("no credentials in the URL: set PGBH_PATRONI_USER and PGBH_PATRONI_PASSWORD"));
        }
        let (host, port) = if let Some(r) = authority.strip_prefix('[') {
            let (h, after) = r.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            (h.to_string(), after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| bad("the port is not a number"))?,
            None => 8008,
        };
        if path.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(bad("spaces in the path"));
        }
        Ok(Url { tls, host, port, prefix: path.trim_end_matches('/').to_string() })
    }
}

trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// One GET; the body of a 200 answer, else an error naming the status.
pub fn get(url: &str, path: &str, client: &Client) -> Result<String> {
    let u = Url::parse(url)?;
    let addrs: Vec<_> =
        (u.host.as_str(), u.port).to_socket_addrs().map_err(|e| err!("cannot resolve {}: {}", u.host, e))?.collect();
    let mut last = err!("{} has no address", u.host);
    let mut tcp = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = err!("cannot connect to {}: {}", a, e),
        }
    }
    let tcp = tcp.ok_or(last)?;
    tcp.set_read_timeout(Some(IO_TIMEOUT)).map_err(|e| err!("{}", e))?;
    tcp.set_write_timeout(Some(IO_TIMEOUT)).map_err(|e| err!("{}", e))?;
    let mut stream: Box<dyn Stream> = if u.tls { Box::new(tls(&u, tcp, client)?) } else { Box::new(tcp) };
    let host_header =
        if u.host.contains(':') { format!("[{}]:{}", u.host, u.port) } else { format!("{}:{}", u.host, u.port) };
    let req = format!(
        "GET {}{} HTTP/1.1\r\nHost: {}\r\nUser-Agent: pg-backup-hooks\r\nAccept: application/json\r\nConnection: close\r\n{}\r\n",
        u.prefix,
        path,
        host_header,
        client.auth.as_ref().map(Auth::header).unwrap_or_default()
    );
    stream.write_all(req.as_bytes()).map_err(|e| err!("sending the request: {}", e))?;
    let mut raw = Vec::new();
    stream.take(MAX_RESPONSE).read_to_end(&mut raw).map_err(|e| err!("reading the answer: {}", e))?;
    let (status, body) = parse_response(&raw)?;
    match status {
        200 => Ok(body),
        401 | 403 => Err(err!(
            "HTTP {}: the REST API wants credentials: set PGBH_PATRONI_USER and PGBH_PATRONI_PASSWORD (restapi.authentication)",
            status
        )),
        s => Err(err!("HTTP {} for {}", s, path)),
    }
}

fn tls(u: &Url, tcp: TcpStream, client: &Client) -> Result<openssl::ssl::SslStream<TcpStream>> {
    use openssl::ssl::{SslConnector, SslMethod};
    let mut b = SslConnector::builder(SslMethod::tls_client()).map_err(|e| err!("TLS: {}", e))?;
    if let Some(ca) = &client.cacert {
        b.set_ca_file(ca).map_err(|e| err!("PGBH_PATRONI_CACERT {}: {}", ca.display(), e))?;
    }
    b.build().connect(&u.host, tcp).map_err(|e| err!("TLS with {}: {}", u.host, e))
}

/// Status code and body of an HTTP/1.x answer (Content-Length, chunked, or up to close).
pub fn parse_response(raw: &[u8]) -> Result<(u16, String)> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| err!("the answer is not HTTP (no end of headers)"))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| err!("the answer is not HTTP: {:?}", crate::error::one_line(status_line)))?;
    let mut chunked = false;
    let mut length = None;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            } else if k == "content-length" {
                length = v.parse::<usize>().ok();
            }
        }
    }
    let mut body = &raw[end + 4..];
    let owned;
    if chunked {
        owned = dechunk(body)?;
        body = &owned;
    } else if let Some(n) = length {
        if body.len() < n {
            return Err(err!("the answer ended early ({} of {} bytes)", body.len(), n));
        }
        body = &body[..n];
    }
    let text = String::from_utf8(body.to_vec()).map_err(|_| err!("the answer is not UTF-8"))?;
    Ok((status, text))
}

fn dechunk(mut b: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let nl = b.windows(2).position(|w| w == b"\r\n").ok_or_else(|| err!("bad chunked answer"))?;
        let size_text = String::from_utf8_lossy(&b[..nl]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| err!("bad chunk size {:?}", size_text))?;
        b = &b[nl + 2..];
        if size == 0 {
            return Ok(out);
        }
        if b.len() < size + 2 {
            return Err(err!("the chunked answer ended early"));
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = include_str!("../../tests/data/patroni/3.0.2-cluster.json");
    const CLUSTER_SYNC: &str = include_str!("../../tests/data/patroni/3.0.2-cluster-sync.json");

    #[test]
    fn a_real_3_0_2_cluster_answer_parses() {
        let m = parse_cluster(CLUSTER).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!((m[0].name.as_str(), m[0].role.as_str(), m[0].state.as_str()), ("m1", "leader", "running"));
        assert_eq!((m[0].host.as_str(), m[0].port, m[0].timeline, m[0].lag), ("127.0.0.1", 15431, Some(1), None));
        assert_eq!((m[1].role.as_str(), m[1].lag, m[1].port), ("replica", Some(0), 15432));
        assert_eq!(m[2].api_url.as_deref(), Some("http://127.0.0.1:18003/patroni"));
    }

    #[test]
    fn replica_is_the_least_lagged_streaming_one_and_brings_the_leader() {
        let mut m = parse_cluster(CLUSTER).unwrap();
        let c = choose(&m, Want::Replica).unwrap();
        assert_eq!((c.member.name.as_str(), c.leader.unwrap().name.as_str()), ("m2", "m1"));
        m[1].lag = Some(5000);
        m[2].lag = Some(10);
        assert_eq!(choose(&m, Want::Replica).unwrap().member.name, "m3");
        m[2].state = "starting".into();
        assert_eq!(choose(&m, Want::Replica).unwrap().member.name, "m2");
        m[1].timeline = Some(2);
        let e = choose(&m, Want::Replica).unwrap_err();
        assert!(e.msg.contains("no streaming replica") && e.msg.contains("m3 (replica, starting"), "{}", e.msg);
        assert_eq!(choose(&m, Want::Any).unwrap().member.name, "m1");
    }

    #[test]
    fn leader_and_sync() {
        let m = parse_cluster(CLUSTER).unwrap();
        let c = choose(&m, Want::Leader).unwrap();
        assert_eq!(c.member.name, "m1");
        assert!(c.leader.is_none());
        assert!(choose(&m, Want::Sync).unwrap_err().msg.contains("synchronous_mode"));
        let s = parse_cluster(CLUSTER_SYNC).unwrap();
        assert_eq!(s[2].role, "sync_standby");
        assert_eq!(choose(&s, Want::Sync).unwrap().member.name, "m3");
        assert_eq!(choose(&s, Want::Replica).unwrap().member.name, "m2");
    }

    #[test]
    fn no_leader_is_an_error_listing_the_members() {
        let mut m = parse_cluster(CLUSTER).unwrap();
        m[0].role = "replica".into();
        let e = choose(&m, Want::Replica).unwrap_err();
        assert!(
            e.msg.contains("no running leader") && e.msg.contains("m1 (replica, running, timeline 1)"),
            "{}",
            e.msg
        );
    }

    #[test]
    fn unknown_lag_and_missing_fields() {
        let m = parse_cluster(r#"{"members":[{"name":"a","role":"replica","state":"streaming","lag":"unknown"}]}"#)
            .unwrap();
        assert_eq!((m[0].lag, m[0].port, m[0].timeline), (None, 5432, None));
        assert!(parse_cluster("<html>").unwrap_err().msg.contains("not what Patroni sends"));
    }

    #[test]
    fn a_named_local_member_must_be_in_the_cluster() {
        let m = parse_cluster(CLUSTER).unwrap();
        assert_eq!(local_member("http://127.0.0.1:1", &m, Some("m3")).unwrap(), "m3");
        let e = local_member("http://127.0.0.1:1", &m, Some("m9")).unwrap_err();
        assert!(e.msg.contains("PGBH_PATRONI_MEMBER=m9 is not a member") && e.msg.contains("m1 (leader"), "{}", e.msg);
    }

    #[test]
    fn a_switchover_since_pre_is_named() {
        let m = parse_cluster(CLUSTER).unwrap();
        let urls = vec!["http://x:1".to_string()];
        let seen = Seen::new(&urls, &choose(&m, Want::Replica).unwrap());
        assert_eq!(seen.changed(&m), None);
        let mut now = m.clone();
        now[0].role = "replica".into();
        now[2].role = "leader".into();
        now[2].timeline = Some(2);
        now[1].timeline = Some(2);
        let e = seen.changed(&now).unwrap();
        assert!(e.starts_with("a switchover or failover changed its leader: at pre m2 was a replica of leader m1 (timeline 1); now m3 leads"), "{e}");
        now[1].role = "leader".into();
        now[2].role = "replica".into();
        assert!(seen.changed(&now).unwrap().starts_with("a switchover or failover promoted it"));
        let at_leader = Seen::new(&urls, &choose(&m, Want::Leader).unwrap());
        assert!(at_leader
            .changed(&now)
            .unwrap()
            .starts_with("a switchover or failover demoted it: at pre m1 was the leader"));
        now.retain(|x| x.role != "leader");
        assert!(at_leader.changed(&now).unwrap().contains("no leader"));
    }

    #[test]
    fn urls() {
        let u = Url::parse("http://10.0.0.1:8008").unwrap();
        assert_eq!(u, Url { tls: false, host: "10.0.0.1".into(), port: 8008, prefix: "".into() });
        let u = Url::parse("https://[::1]/api/").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port, u.prefix.as_str()), (true, "::1", 8008, "/api"));
        assert!(Url::parse("http://u:p@h:1").unwrap_err().msg.contains("no credentials"));
        assert!(Url::parse("h:8008").is_err());
        assert!(Url::parse("http://h:x").is_err());
    }

    #[test]
    fn responses() {
        let (s, b) = parse_response(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}junk").unwrap();
        assert_eq!((s, b.as_str()), (200, "{}"));
        let (s, b) =
            parse_response(b"HTTP/1.1 503 x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n1\r\n \r\n0\r\n\r\n")
                .unwrap();
        assert_eq!((s, b.as_str()), (503, "{} "));
        assert!(parse_response(b"SSH-2.0\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}").is_err());
    }

    #[test]
    fn basic_auth_encoding() {
        assert_eq!(base64(b"patroni:s3cr3t"), "cGF0cm9uaTpzM2NyM3Q=");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
    }
}
