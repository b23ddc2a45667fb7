//! libpq-style connection settings: `key=value` strings, `postgresql://` URIs, the PG*
//! environment variables and the password file, resolved the way psql would resolve them.
//!
//! We parse into a plain key/value map first so that we can fill defaults, look up
//! ~/.pgpass, print the settings without the password, and derive a worker's settings
//! from the coordinator's (same user and database, other host and port).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

/// Keys we understand; anything else is refused with a clear message rather than ignored.
const KNOWN_KEYS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "user",
    "password",
    "dbname",
    "passfile",
    "sslmode",
    "application_name",
    "connect_timeout",
    "options",
    "keepalives",
    "keepalives_idle",
    "target_session_attrs",
    "channel_binding",
    "tcp_user_timeout",
    "sslcert",
    "sslkey",
    "sslrootcert",
];

/// Default Unix-socket directory of Debian's libpq, then the upstream default.
const SOCKET_DIRS: &[&str] = &["/var/run/postgresql", "/tmp"];

/// A setting whose values are a closed set: each value with its libpq spelling, in the order
/// the error message lists them.
trait Closed: Copy + PartialEq + 'static {
    const ALL: &'static [(Self, &'static str)];

    fn as_str(self) -> &'static str {
        Self::ALL.iter().find(|(t, _)| *t == self).map(|(_, n)| *n).unwrap_or("")
    }
}

/// libpq's sslmode (see tls.rs for what each one does here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Closed for SslMode {
    const ALL: &'static [(Self, &'static str)] = &[
        (SslMode::Disable, "disable"),
        (SslMode::Allow, "allow"),
        (SslMode::Prefer, "prefer"),
        (SslMode::Require, "require"),
        (SslMode::VerifyCa, "verify-ca"),
        (SslMode::VerifyFull, "verify-full"),
    ];
}

/// libpq's channel_binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelBinding {
    Disable,
    Prefer,
    Require,
}

impl Closed for ChannelBinding {
    const ALL: &'static [(Self, &'static str)] = &[
        (ChannelBinding::Disable, "disable"),
        (ChannelBinding::Prefer, "prefer"),
        (ChannelBinding::Require, "require"),
    ];
}

/// libpq's target_session_attrs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetSessionAttrs {
    Any,
    ReadWrite,
    ReadOnly,
    Primary,
    Standby,
    PreferStandby,
}

impl Closed for TargetSessionAttrs {
    const ALL: &'static [(Self, &'static str)] = &[
        (TargetSessionAttrs::Any, "any"),
        (TargetSessionAttrs::ReadWrite, "read-write"),
        (TargetSessionAttrs::ReadOnly, "read-only"),
        (TargetSessionAttrs::Primary, "primary"),
        (TargetSessionAttrs::Standby, "standby"),
        (TargetSessionAttrs::PreferStandby, "prefer-standby"),
    ];
}

macro_rules! display_closed {
    ($($t:ty),*) => {$(
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}
display_closed!(SslMode, ChannelBinding, TargetSessionAttrs);

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConnInfo {
    params: BTreeMap<String, String>,
}

impl ConnInfo {
    /// Parse a libpq connection string (`key=value ...`) or URI (`postgresql://...`).
    pub fn parse(s: &str) -> Result<ConnInfo> {
        let s = s.trim();
        let params = if s.starts_with("postgresql://") || s.starts_with("postgres://") {
            parse_uri(s)?
        } else {
            parse_keyvalue(s)?
        };
        for k in params.keys() {
            if !KNOWN_KEYS.contains(&k.as_str()) {
                return Err(Error::usage(format!(
                    "unsupported connection parameter \"{}\" (supported: {})",
                    k,
                    KNOWN_KEYS.join(", ")
                )));
            }
        }
        let c = ConnInfo { params };
        c.check_values()?;
        Ok(c)
    }

    /// Values libpq checks before connecting; ours must be applied as libpq applies them,
    /// or refused, never accepted and ignored.
    pub fn check_values(&self) -> Result<()> {
        self.ssl_mode()?;
        self.channel_binding()?;
        self.target_session_attrs()?;
        Ok(())
    }

    /// channel_binding (libpq's default: prefer). `require` refuses any authentication that
    /// is not SCRAM-SHA-256-PLUS over TLS (so never sends a password in clear).
    pub fn channel_binding(&self) -> Result<ChannelBinding> {
        self.closed("channel_binding", ChannelBinding::Prefer)
    }

    /// target_session_attrs (libpq's default: any).
    pub fn target_session_attrs(&self) -> Result<TargetSessionAttrs> {
        self.closed("target_session_attrs", TargetSessionAttrs::Any)
    }

    /// The sslmode in force (libpq's default is prefer), checked.
    pub fn ssl_mode(&self) -> Result<SslMode> {
        self.closed("sslmode", SslMode::Prefer)
    }

    /// A setting with a closed set of values: `default` when unset, a usage error naming
    /// every accepted spelling when it is none of them.
    fn closed<T: Closed>(&self, key: &str, default: T) -> Result<T> {
        let Some(v) = self.get(key) else { return Ok(default) };
        T::ALL.iter().find(|(_, name)| *name == v).map(|(t, _)| *t).ok_or_else(|| {
            let names: Vec<&str> = T::ALL.iter().map(|(_, n)| *n).collect();
            Error::usage(format!("{} \"{}\" is not one of {}", key, v, names.join(", ")))
        })
    }

    /// One set of settings per host of a multi-host string (host, hostaddr and port lists
    /// taken by position; one port applies to every host, as in libpq).
    pub fn per_host(&self) -> Vec<ConnInfo> {
        let list = |k: &str| -> Vec<String> {
            self.get(k).map(|v| v.split(',').map(str::to_string).collect()).unwrap_or_default()
        };
        let (hosts, addrs, ports) = (list("host"), list("hostaddr"), list("port"));
        let n = hosts.len().max(addrs.len()).max(1);
        (0..n)
            .map(|i| {
                let mut c = self.clone();
                for (key, values) in [("host", &hosts), ("hostaddr", &addrs), ("port", &ports)] {
                    let v = if values.len() == 1 { values.first() } else { values.get(i) };
                    if let Some(v) = v {
                        c.set(key, v.clone());
                    }
                }
                c
            })
            .collect()
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }

    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.params.insert(key.to_string(), value.into());
    }

    /// Fill what the string left out from the environment, as libpq does.
    pub fn with_env_defaults(mut self) -> ConnInfo {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let pairs = [
            ("host", "PGHOST"),
            ("hostaddr", "PGHOSTADDR"),
            ("port", "PGPORT"),
            ("user", "PGUSER"),
            ("dbname", "PGDATABASE"),
            ("password", "PGPASSWORD"),
            ("passfile", "PGPASSFILE"),
            ("sslmode", "PGSSLMODE"),
            ("sslcert", "PGSSLCERT"),
            ("sslkey", "PGSSLKEY"),
            ("sslrootcert", "PGSSLROOTCERT"),
            ("connect_timeout", "PGCONNECT_TIMEOUT"),
            ("options", "PGOPTIONS"),
            ("target_session_attrs", "PGTARGETSESSIONATTRS"),
            ("channel_binding", "PGCHANNELBINDING"),
        ];
        for (key, var) in pairs {
            if self.get(key).is_none() {
                if let Some(v) = env(var) {
                    self.set(key, v);
                }
            }
        }
        if self.get("host").is_none() && self.get("hostaddr").is_none() {
            let dir = SOCKET_DIRS.iter().find(|d| Path::new(d).is_dir()).unwrap_or(&"/tmp");
            self.set("host", *dir);
        }
        if self.get("port").is_none() {
            self.set("port", "5432");
        }
        if self.get("user").is_none() {
            if let Ok(Some(u)) = nix::unistd::User::from_uid(nix::unistd::geteuid()) {
                self.set("user", u.name);
            }
        }
        if self.get("dbname").is_none() {
            if let Some(u) = self.get("user").map(str::to_string) {
                self.set("dbname", u);
            }
        }
        self
    }

    /// The settings as a libpq string without the password: safe for logs and manifests.
    pub fn redacted(&self) -> String {
        self.params
            .iter()
            .filter(|(k, v)| k.as_str() != "password" && !v.is_empty())
            .map(|(k, v)| format!("{}={}", k, quote_value(v)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The full settings as a libpq string, password included: only for handing to the
    /// helper over its stdin pipe, never for printing.
    pub fn to_secret_string(&self) -> String {
        self.params
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{}={}", k, quote_value(v)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A short "host:port" for messages.
    pub fn endpoint(&self) -> String {
        let host = self.get("hostaddr").or(self.get("host")).unwrap_or("?");
        format!("{}:{}", host, self.get("port").unwrap_or("5432"))
    }

    /// Build the driver's configuration. The password comes from the string, PGPASSWORD,
    /// or the password file; it never appears in any message.
    pub fn to_config(&self, application_name: &str) -> Result<postgres::Config> {
        let mut cfg = postgres::Config::new();
        let hosts: Vec<&str> = self.get("host").map(|h| h.split(',').collect()).unwrap_or_default();
        let ports: Vec<&str> = self.get("port").map(|p| p.split(',').collect()).unwrap_or_default();
        self.config_endpoints(&mut cfg, &hosts, &ports)?;
        if let Some(u) = self.get("user") {
            cfg.user(u);
        }
        if let Some(d) = self.get("dbname") {
            cfg.dbname(d);
        }
        if let Some(o) = self.get("options") {
            cfg.options(o);
        }
        self.config_security(&mut cfg)?;
        self.config_timeouts(&mut cfg)?;
        cfg.application_name(self.get("application_name").unwrap_or(application_name));
        if let Some(pw) = self.password(&hosts, &ports) {
            cfg.password(pw);
        }
        Ok(cfg)
    }

    /// Hosts, host addresses and ports, each list in order.
    fn config_endpoints(&self, cfg: &mut postgres::Config, hosts: &[&str], ports: &[&str]) -> Result<()> {
        for h in hosts {
            cfg.host(h);
        }
        if let Some(addrs) = self.get("hostaddr") {
            for a in addrs.split(',') {
                let ip = a.parse().map_err(|_| Error::usage(format!("hostaddr \"{}\" is not an IP address", a)))?;
                cfg.hostaddr(ip);
            }
        }
        for p in ports {
            let port: u16 = p.parse().map_err(|_| Error::usage(format!("port \"{}\" is not a number", p)))?;
            cfg.port(port);
        }
        Ok(())
    }

    /// sslmode, channel_binding and target_session_attrs in the driver's terms (the driver
    /// has fewer sslmodes: tls::connect applies the rest; it also applies primary, standby and
    /// prefer-standby, host by host).
    fn config_security(&self, cfg: &mut postgres::Config) -> Result<()> {
        use postgres::config::{ChannelBinding as Cb, SslMode as Ssl, TargetSessionAttrs as Tsa};
        cfg.ssl_mode(match self.ssl_mode()? {
            SslMode::Disable | SslMode::Allow => Ssl::Disable,
            SslMode::Prefer => Ssl::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Ssl::Require,
        });
        cfg.channel_binding(match self.channel_binding()? {
            ChannelBinding::Disable => Cb::Disable,
            ChannelBinding::Prefer => Cb::Prefer,
            ChannelBinding::Require => Cb::Require,
        });
        cfg.target_session_attrs(match self.target_session_attrs()? {
            TargetSessionAttrs::ReadWrite => Tsa::ReadWrite,
            TargetSessionAttrs::ReadOnly => Tsa::ReadOnly,
            _ => Tsa::Any,
        });
        Ok(())
    }

    /// connect_timeout (default 10 s), TCP keepalives and tcp_user_timeout: a dead server or
    /// network is noticed within about a minute.
    fn config_timeouts(&self, cfg: &mut postgres::Config) -> Result<()> {
        let timeout = match self.get("connect_timeout") {
            Some(t) => t
                .parse::<u64>()
                .map_err(|_| Error::usage(format!("connect_timeout \"{}\" is not a number of seconds", t)))?,
            None => 10,
        };
        cfg.connect_timeout(Duration::from_secs(timeout.max(1)));
        cfg.keepalives(self.get("keepalives") != Some("0"));
        let idle = self.get("keepalives_idle").and_then(|v| v.parse::<u64>().ok()).unwrap_or(30);
        cfg.keepalives_idle(Duration::from_secs(idle.max(1)));
        cfg.keepalives_interval(Duration::from_secs(10));
        cfg.keepalives_retries(3);
        if let Some(t) = self.get("tcp_user_timeout").and_then(|v| v.parse::<u64>().ok()) {
            cfg.tcp_user_timeout(Duration::from_millis(t));
        }
        Ok(())
    }

    fn password(&self, hosts: &[&str], ports: &[&str]) -> Option<String> {
        if let Some(pw) = self.params.get("password") {
            return Some(pw.clone());
        }
        let file = match self.get("passfile") {
            Some(f) => PathBuf::from(f),
            None => PathBuf::from(std::env::var_os("HOME")?).join(".pgpass"),
        };
        let host = hosts.first().copied().unwrap_or("localhost");
        let port = ports.first().copied().unwrap_or("5432");
        lookup_pgpass(&file, host, port, self.get("dbname").unwrap_or(""), self.get("user").unwrap_or(""))
    }
}

/// Look a password up in a libpq password file (`host:port:db:user:password`, `*` wildcards,
/// `\:` and `\\` escapes). Like libpq, a file readable by group or others is ignored.
pub fn lookup_pgpass(file: &Path, host: &str, port: &str, db: &str, user: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(file).ok()?;
    if meta.permissions().mode() & 0o077 != 0 {
        log::warn!("password file {} has group or world access; ignoring it (chmod 0600 it)", file.display());
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    let host = if host.starts_with('/') { "localhost" } else { host };
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_pgpass_line(line);
        if fields.len() < 5 {
            continue;
        }
        let m = |pat: &str, v: &str| pat == "*" || pat == v;
        if m(&fields[0], host) && m(&fields[1], port) && m(&fields[2], db) && m(&fields[3], user) {
            return Some(fields[4].clone());
        }
    }
    None
}

fn split_pgpass_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    if let Some(f) = fields.last_mut() {
                        f.push(n)
                    }
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            _ => {
                if let Some(f) = fields.last_mut() {
                    f.push(c)
                }
            }
        }
    }
    fields
}

/// A text that may hold a connection string (a `--node` value, a fragment of one), with every
/// password in it replaced by `***`: the `password` of a key=value string (quoted or not) and
/// the password of a URI's `user:password@`. For messages that quote what the user typed.
pub fn redact_text(s: &str) -> String {
    redact_keyvalue_password(&redact_uri_password(s))
}

fn redact_uri_password(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // Up to the last '@' of the word: a password typed with a raw '/', '?' or '@' in it
        // is still hidden (over-redacting a path with an '@' is harmless).
        let word = tail.find(char::is_whitespace).unwrap_or(tail.len());
        let end = tail[..word].rfind('@').map(|a| a + 1).unwrap_or(0);
        let authority = &tail[..end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(a), Some(c)) if c < a => {
                out.push_str(&authority[..=c]);
                out.push_str("***");
                out.push_str(&authority[a..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn redact_keyvalue_password(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = find_password_key(rest) {
        out.push_str(&rest[..i]);
        let after_key = &rest[i + "password".len()..];
        let eq = after_key.len() - after_key.trim_start().len();
        let after_eq = after_key.trim_start().strip_prefix('=').unwrap_or("");
        let val = after_eq.trim_start();
        out.push_str(&rest[i..i + "password".len() + eq]);
        out.push_str("=***");
        rest = &val[value_len(val)..];
    }
    out.push_str(rest);
    out
}

/// Where `password` starts as a key (at the start or after a separator, followed by `=`).
fn find_password_key(s: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(off) = s[from..].find("password") {
        let i = from + off;
        let before_ok = s[..i].chars().next_back().is_none_or(|c| c.is_whitespace() || "?&;='\"".contains(c));
        let after = s[i + "password".len()..].trim_start();
        if before_ok && after.starts_with('=') {
            return Some(i);
        }
        from = i + "password".len();
    }
    None
}

/// Length of a key=value value at the start of `v`: a quoted one with its escapes, or up to
/// the next blank (or `&`, in a URI query).
fn value_len(v: &str) -> usize {
    let mut it = v.char_indices();
    if v.starts_with('\'') {
        it.next();
        while let Some((i, c)) = it.next() {
            match c {
                '\\' => {
                    it.next();
                }
                '\'' => return i + 1,
                _ => {}
            }
        }
        return v.len();
    }
    v.find(|c: char| c.is_whitespace() || c == '&').unwrap_or(v.len())
}

fn quote_value(v: &str) -> String {
    if !v.is_empty() && !v.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\') {
        return v.to_string();
    }
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A `key=value ...` string, read as libpq reads it: blanks around `=` are allowed, a value
/// is bare or in single quotes, and a backslash takes the next character as it is.
fn parse_keyvalue(s: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut it = s.chars().peekable();
    loop {
        skip_blanks(&mut it);
        if it.peek().is_none() {
            break;
        }
        let key = read_key(&mut it);
        skip_blanks(&mut it);
        expect_equals(&mut it, &key)?;
        skip_blanks(&mut it);
        let val = if it.peek() == Some(&'\'') { read_quoted(&mut it, &key)? } else { read_bare(&mut it) };
        out.insert(key, val);
    }
    Ok(out)
}

type Chars<'a> = std::iter::Peekable<std::str::Chars<'a>>;

fn skip_blanks(it: &mut Chars) {
    while it.peek().is_some_and(|c| c.is_whitespace()) {
        it.next();
    }
}

/// Up to `=` or a blank.
fn read_key(it: &mut Chars) -> String {
    let mut key = String::new();
    while let Some(&c) = it.peek() {
        if c == '=' || c.is_whitespace() {
            break;
        }
        key.push(c);
        it.next();
    }
    key
}

fn expect_equals(it: &mut Chars, key: &str) -> Result<()> {
    if it.next() == Some('=') {
        return Ok(());
    }
    // Quote the word only when it is a parameter name: otherwise it may be part of a
    // password that was meant to be quoted.
    let what = if KNOWN_KEYS.contains(&key) { format!(" after \"{}\"", key) } else { String::new() };
    Err(Error::usage(format!(
        "connection string: expected \"=\"{} (use key=value pairs, quote values with blanks in '...', or a postgresql:// URI)",
        what
    )))
}

/// A value in single quotes (the opening quote not yet taken), up to the closing quote.
fn read_quoted(it: &mut Chars, key: &str) -> Result<String> {
    it.next();
    let mut val = String::new();
    while let Some(c) = it.next() {
        match c {
            '\\' => val.extend(it.next()),
            '\'' => return Ok(val),
            _ => val.push(c),
        }
    }
    Err(Error::usage(format!("connection string: unterminated quoted value for \"{}\"", key)))
}

/// A bare value, up to the next blank.
fn read_bare(it: &mut Chars) -> String {
    let mut val = String::new();
    while let Some(&c) = it.peek() {
        if c.is_whitespace() {
            break;
        }
        it.next();
        if c == '\\' {
            val.extend(it.next());
        } else {
            val.push(c);
        }
    }
    val
}

fn percent_decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(b) => {
                    out.push(b);
                    i += 3;
                    continue;
                }
                None => return Err(Error::usage("connection URI: invalid percent-encoding")),
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).map_err(|_| Error::usage("connection URI: percent-encoding is not UTF-8"))
}

/// A `postgresql://[user[:password]@][host[:port][,...]][/dbname][?key=value&...]` URI.
fn parse_uri(s: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let rest = s.split_once("://").map(|(_, r)| r).unwrap_or("");
    let (rest, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match rest.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (rest, None),
    };
    let hostpart = match authority.rsplit_once('@') {
        Some((userinfo, h)) => {
            uri_userinfo(userinfo, &mut out)?;
            h
        }
        None => authority,
    };
    uri_hosts(hostpart, &mut out)?;
    if let Some(p) = path.filter(|p| !p.is_empty()) {
        out.insert("dbname".into(), percent_decode(p)?);
    }
    if let Some(q) = query {
        uri_query(q, &mut out)?;
    }
    Ok(out)
}

/// `user[:password]` (before the last `@`; the first `:` ends the user).
fn uri_userinfo(userinfo: &str, out: &mut BTreeMap<String, String>) -> Result<()> {
    let (u, p) = match userinfo.split_once(':') {
        Some((u, p)) => (u, Some(p)),
        None => (userinfo, None),
    };
    if !u.is_empty() {
        out.insert("user".into(), percent_decode(u)?);
    }
    if let Some(p) = p {
        out.insert("password".into(), percent_decode(p)?);
    }
    Ok(())
}

/// `host[:port],...` with `[v6]` hosts: the hosts joined into `host`, the ports given into `port`.
fn uri_hosts(hostpart: &str, out: &mut BTreeMap<String, String>) -> Result<()> {
    if hostpart.is_empty() {
        return Ok(());
    }
    let mut hosts = Vec::new();
    let mut ports = Vec::new();
    for hp in hostpart.split(',') {
        let (h, p) = uri_host_port(hp)?;
        hosts.push(percent_decode(h)?);
        ports.extend(p);
    }
    if hosts.iter().any(|h| !h.is_empty()) {
        out.insert("host".into(), hosts.join(","));
    }
    if !ports.is_empty() {
        out.insert("port".into(), ports.join(","));
    }
    Ok(())
}

/// One `host[:port]` or `[v6][:port]`.
fn uri_host_port(hp: &str) -> Result<(&str, Option<String>)> {
    if let Some(stripped) = hp.strip_prefix('[') {
        return match stripped.split_once(']') {
            Some((h, rest)) => Ok((h, rest.strip_prefix(':').map(str::to_string))),
            None => Err(Error::usage("connection URI: unterminated [ in host")),
        };
    }
    Ok(match hp.rsplit_once(':') {
        Some((h, p)) => (h, Some(p.to_string())),
        None => (hp, None),
    })
}

/// `key=value&...`: each pair percent-decoded; a later pair wins.
fn uri_query(q: &str, out: &mut BTreeMap<String, String>) -> Result<()> {
    for kv in q.split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| Error::usage(format!("connection URI: parameter \"{}\" has no value", kv)))?;
        out.insert(percent_decode(k)?, percent_decode(v)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyvalue_with_quotes() {
        let c = ConnInfo::parse("host=/tmp port=5433 user='a b' password='x\\'y' dbname=db").unwrap();
        assert_eq!(c.get("user"), Some("a b"));
        assert_eq!(c.get("password"), Some("x'y"));
        assert!(!c.redacted().contains("x'y"));
        assert!(c.redacted().contains("user='a b'"));
        assert_eq!(ConnInfo::parse(&c.to_secret_string()).unwrap(), c);
    }

    #[test]
    fn uri_forms() {
        let c = ConnInfo::parse("postgresql://bob:s%40cret@db1.example:6543/sales?sslmode=disable&application_name=x")
            .unwrap();
        assert_eq!(c.get("host"), Some("db1.example"));
        assert_eq!(c.get("port"), Some("6543"));
        assert_eq!(c.get("user"), Some("bob"));
        assert_eq!(c.get("password"), Some("s@cret"));
        assert_eq!(c.get("dbname"), Some("sales"));
        assert!(!c.redacted().contains("cret"));
        let c = ConnInfo::parse("postgresql://%2Fvar%2Frun%2Fpostgresql/db").unwrap();
        assert_eq!(c.get("host"), Some("/var/run/postgresql"));
        let c = ConnInfo::parse("postgresql:///db?host=/tmp&port=5499").unwrap();
        assert_eq!(c.get("host"), Some("/tmp"));
        assert_eq!(c.get("port"), Some("5499"));
    }

    #[test]
    fn redact_text_hides_every_password_form() {
        for (input, secret) in [
            ("n=postgresql://u:SECRET@h/db", "SECRET"),
            ("postgres://u:SE%40CRET@h1,h2:5/db?sslmode=x", "SE%40CRET"),
            ("postgresql://u:SE/CR?ET@h/db", "SE/CR"),
            ("n=host=h password=SECRET user=u", "SECRET"),
            ("n=host=h password = 'SE CR\\'ET' user=u", "SE CR"),
            ("n=postgresql://h/db?user=u&password=SECRET&x=1", "SECRET"),
            ("bad name=password='a b c'", "a b c"),
        ] {
            let r = redact_text(input);
            assert!(!r.contains(secret), "{} -> {}", input, r);
            assert!(!r.contains("CR"), "{} -> {}", input, r);
            assert!(r.contains("***"), "{} -> {}", input, r);
        }
        assert!(redact_text("n=host=h password=SECRET user=u").ends_with("user=u"));
        assert_eq!(redact_text("n=host=h user=passwordless"), "n=host=h user=passwordless");
    }

    #[test]
    fn bad_strings_are_refused() {
        assert!(ConnInfo::parse("host").is_err());
        assert!(ConnInfo::parse("host='x").is_err());
        assert!(ConnInfo::parse("nosuchkey=1").unwrap_err().msg.contains("nosuchkey"));
    }

    fn usage_msg(s: &str) -> String {
        let e = ConnInfo::parse(s).unwrap_err();
        assert_eq!(e.code, crate::error::exit::USAGE, "{}: {}", s, e.msg);
        e.msg
    }

    #[test]
    fn keyvalue_quoting_and_escapes() {
        // Blanks around '=', escapes in bare and quoted values, an empty quoted value.
        let c = ConnInfo::parse(r"  host = h1   port=\5\4\3\2 user=a\ b password='' dbname='x\\y' ").unwrap();
        assert_eq!(c.get("host"), Some("h1"));
        assert_eq!(c.get("port"), Some("5432"));
        assert_eq!(c.get("user"), Some("a b"));
        assert_eq!(c.params.get("password").map(String::as_str), Some(""));
        assert_eq!(c.get("password"), None, "an empty value counts as unset");
        assert_eq!(c.get("dbname"), Some("x\\y"));
        // A quote inside a bare value is kept; a quoted value may hold '=' and blanks.
        let c = ConnInfo::parse("user=o'neil options='-c a=b  -c c=d'").unwrap();
        assert_eq!(c.get("user"), Some("o'neil"));
        assert_eq!(c.get("options"), Some("-c a=b  -c c=d"));
        // Later keys win; tabs and newlines separate pairs.
        let c = ConnInfo::parse("port=1\tport=2\n\tuser=u").unwrap();
        assert_eq!((c.get("port"), c.get("user")), (Some("2"), Some("u")));
        assert_eq!(ConnInfo::parse("").unwrap(), ConnInfo::default());
        assert_eq!(ConnInfo::parse("   ").unwrap(), ConnInfo::default());
        // Blanks after '=' are skipped, so "host= user=u" gives host the value "user=u".
        let c = ConnInfo::parse("host= user=u").unwrap();
        assert_eq!((c.get("host"), c.get("user")), (Some("user=u"), None));
        let c = ConnInfo::parse("host=").unwrap();
        assert_eq!(c.params.get("host").map(String::as_str), Some(""));
    }

    #[test]
    fn keyvalue_errors_are_usage_errors_that_say_what() {
        let want = " (use key=value pairs, quote values with blanks in '...', or a postgresql:// URI)";
        assert_eq!(usage_msg("host"), format!("connection string: expected \"=\" after \"host\"{}", want));
        assert_eq!(usage_msg("host=a user"), format!("connection string: expected \"=\" after \"user\"{}", want));
        // Not a parameter name: maybe part of a password, so not quoted back.
        assert_eq!(usage_msg("password=se cret"), format!("connection string: expected \"=\"{}", want));
        assert!(usage_msg("=x").starts_with("unsupported connection parameter \"\" (supported: host,"));
        assert_eq!(usage_msg("user='a b"), "connection string: unterminated quoted value for \"user\"");
        assert_eq!(usage_msg("user='a b\\'"), "connection string: unterminated quoted value for \"user\"");
        let m = usage_msg("host=h nosuchkey=1");
        assert!(
            m.starts_with("unsupported connection parameter \"nosuchkey\" (supported: host, hostaddr, port,"),
            "{m}"
        );
    }

    #[test]
    fn uri_hosts_ports_and_percent_encoding() {
        let c = ConnInfo::parse("postgres://h1:5432,h2,[::1]:5433,[fe80::1]/db").unwrap();
        assert_eq!(c.get("host"), Some("h1,h2,::1,fe80::1"));
        assert_eq!(c.get("port"), Some("5432,5433"), "ports are joined as given, not by position");
        assert_eq!(c.get("dbname"), Some("db"));
        let c = ConnInfo::parse("postgresql://u@:5499").unwrap();
        assert_eq!((c.get("user"), c.get("host"), c.get("port")), (Some("u"), None, Some("5499")));
        assert_eq!(c.params.get("password"), None);
        let c = ConnInfo::parse("postgresql://:pw@h").unwrap();
        assert_eq!((c.get("user"), c.get("password"), c.get("host")), (None, Some("pw"), Some("h")));
        // The last '@' ends the user info; the first ':' ends the user.
        let c = ConnInfo::parse("postgresql://u:p:w@x@h/d%20b?application_name=a%26b&&options=-c%20x%3Dy").unwrap();
        assert_eq!((c.get("user"), c.get("password"), c.get("host")), (Some("u"), Some("p:w@x"), Some("h")));
        assert_eq!(c.get("dbname"), Some("d b"));
        assert_eq!(c.get("application_name"), Some("a&b"));
        assert_eq!(c.get("options"), Some("-c x=y"));
        let c = ConnInfo::parse("postgresql://h/?port=1&port=2&host=%2Ftmp").unwrap();
        assert_eq!((c.get("host"), c.get("port"), c.get("dbname")), (Some("/tmp"), Some("2"), None));
        assert_eq!(ConnInfo::parse("postgresql://").unwrap(), ConnInfo::default());
        assert_eq!(ConnInfo::parse("postgresql://h:port/db").unwrap().get("port"), Some("port"));
        let c = ConnInfo::parse("postgresql://h?x=").unwrap_err();
        assert!(c.msg.contains("\"x\""), "{}", c.msg);
        let c = ConnInfo::parse("postgresql://h?sslmode=").unwrap();
        assert_eq!(c.get("sslmode"), None);
    }

    #[test]
    fn uri_errors_are_usage_errors_that_say_what() {
        assert_eq!(usage_msg("postgresql://h/db%zz"), "connection URI: invalid percent-encoding");
        assert_eq!(usage_msg("postgresql://h/db%4"), "connection URI: invalid percent-encoding");
        assert_eq!(usage_msg("postgresql://u%ff@h"), "connection URI: percent-encoding is not UTF-8");
        assert_eq!(usage_msg("postgresql://[::1/db"), "connection URI: unterminated [ in host");
        assert_eq!(usage_msg("postgresql://h?sslmode"), "connection URI: parameter \"sslmode\" has no value");
        assert!(usage_msg("postgresql://h?bogus=1").starts_with("unsupported connection parameter \"bogus\""));
        assert!(usage_msg("postgresql://h?%62ogus=1").starts_with("unsupported connection parameter \"bogus\""));
    }

    #[test]
    fn closed_values_are_checked_with_libpq_defaults() {
        let c = ConnInfo::parse("host=h").unwrap();
        assert_eq!(c.ssl_mode().unwrap().to_string(), "prefer");
        assert_eq!(c.channel_binding().unwrap().to_string(), "prefer");
        assert_eq!(c.target_session_attrs().unwrap().to_string(), "any");
        for m in ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] {
            assert_eq!(ConnInfo::parse(&format!("sslmode={m}")).unwrap().ssl_mode().unwrap().to_string(), m);
        }
        for m in ["disable", "prefer", "require"] {
            assert_eq!(
                ConnInfo::parse(&format!("channel_binding={m}")).unwrap().channel_binding().unwrap().to_string(),
                m
            );
        }
        for m in ["any", "read-write", "read-only", "primary", "standby", "prefer-standby"] {
            let c = ConnInfo::parse(&format!("target_session_attrs={m}")).unwrap();
            assert_eq!(c.target_session_attrs().unwrap().to_string(), m);
        }
        assert_eq!(
            usage_msg("sslmode=Require"),
            "sslmode \"Require\" is not one of disable, allow, prefer, require, verify-ca, verify-full"
        );
        assert_eq!(usage_msg("channel_binding=yes"), "channel_binding \"yes\" is not one of disable, prefer, require");
        assert_eq!(
            usage_msg("postgresql://h?target_session_attrs=master"),
            "target_session_attrs \"master\" is not one of any, read-write, read-only, primary, standby, prefer-standby"
        );
        // Empty means unset, so the default.
        assert_eq!(ConnInfo::parse("sslmode=''").unwrap().ssl_mode().unwrap().to_string(), "prefer");
    }

    #[test]
    fn to_config_refuses_bad_numbers_and_addresses() {
        let bad = |s: &str| ConnInfo::parse(s).unwrap().to_config("t").map(|_| ()).unwrap_err();
        let e = bad("hostaddr=10.0.0.1,nohost");
        assert_eq!((e.code, e.msg.as_str()), (crate::error::exit::USAGE, "hostaddr \"nohost\" is not an IP address"));
        assert_eq!(bad("host=h port=5432,x").msg, "port \"x\" is not a number");
        assert_eq!(bad("host=h port=70000").msg, "port \"70000\" is not a number");
        assert_eq!(bad("host=h connect_timeout=5s").msg, "connect_timeout \"5s\" is not a number of seconds");
        let c = ConnInfo::parse(
            "host=a,b hostaddr=10.0.0.1,::1 port=1,2 user=u dbname=d options=-cx=y \
                                 sslmode=verify-full channel_binding=require target_session_attrs=read-only \
                                 connect_timeout=0 keepalives=0 keepalives_idle=x tcp_user_timeout=250 password=p",
        )
        .unwrap();
        let cfg = c.to_config("app").unwrap();
        assert_eq!(cfg.get_hosts().len(), 2);
        assert_eq!(cfg.get_hostaddrs().len(), 2);
        assert_eq!(cfg.get_ports(), &[1, 2]);
        assert_eq!(cfg.get_user(), Some("u"));
        assert_eq!(cfg.get_dbname(), Some("d"));
        assert_eq!(cfg.get_options(), Some("-cx=y"));
        assert_eq!(cfg.get_ssl_mode(), postgres::config::SslMode::Require);
        assert_eq!(cfg.get_channel_binding(), postgres::config::ChannelBinding::Require);
        assert_eq!(cfg.get_target_session_attrs(), postgres::config::TargetSessionAttrs::ReadOnly);
        assert_eq!(cfg.get_connect_timeout(), Some(&Duration::from_secs(1)));
        assert!(!cfg.get_keepalives());
        assert_eq!(cfg.get_keepalives_idle(), Duration::from_secs(30));
        assert_eq!(cfg.get_tcp_user_timeout(), Some(&Duration::from_millis(250)));
        assert_eq!(cfg.get_application_name(), Some("app"));
        assert_eq!(cfg.get_password(), Some(&b"p"[..]));
        let cfg = ConnInfo::parse("host=h sslmode=allow application_name=mine").unwrap().to_config("app").unwrap();
        assert_eq!(cfg.get_ssl_mode(), postgres::config::SslMode::Disable);
        assert_eq!(cfg.get_channel_binding(), postgres::config::ChannelBinding::Prefer);
        assert_eq!(cfg.get_target_session_attrs(), postgres::config::TargetSessionAttrs::Any);
        assert_eq!(cfg.get_connect_timeout(), Some(&Duration::from_secs(10)));
        assert!(cfg.get_keepalives());
        assert_eq!(cfg.get_application_name(), Some("mine"));
        for (m, want) in [
            ("prefer", postgres::config::SslMode::Prefer),
            ("disable", postgres::config::SslMode::Disable),
            ("verify-ca", postgres::config::SslMode::Require),
        ] {
            let cfg = ConnInfo::parse(&format!("host=h sslmode={m}")).unwrap().to_config("a").unwrap();
            assert_eq!(cfg.get_ssl_mode(), want, "{m}");
        }
        let cfg = ConnInfo::parse("host=h target_session_attrs=primary channel_binding=disable")
            .unwrap()
            .to_config("a")
            .unwrap();
        assert_eq!(cfg.get_target_session_attrs(), postgres::config::TargetSessionAttrs::Any);
        assert_eq!(cfg.get_channel_binding(), postgres::config::ChannelBinding::Disable);
        let cfg = ConnInfo::parse("host=h target_session_attrs=read-write").unwrap().to_config("a").unwrap();
        assert_eq!(cfg.get_target_session_attrs(), postgres::config::TargetSessionAttrs::ReadWrite);
    }

    #[test]
    fn per_host_splits_lists_by_position() {
        let c = ConnInfo::parse("host=a,b,c port=1,2,3 user=u").unwrap();
        let hosts: Vec<String> = c.per_host().iter().map(|h| h.endpoint()).collect();
        assert_eq!(hosts, ["a:1", "b:2", "c:3"]);
        let c = ConnInfo::parse("host=a,b port=7").unwrap();
        let hosts: Vec<String> = c.per_host().iter().map(|h| h.endpoint()).collect();
        assert_eq!(hosts, ["a:7", "b:7"]);
        assert_eq!(c.per_host()[1].get("user"), None);
        assert_eq!(ConnInfo::parse("user=u").unwrap().per_host().len(), 1);
    }

    #[test]
    fn pgpass_lookup() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pgpass");
        std::fs::write(&f, "# comment\nother:5432:*:*:no\nlocalhost:5433:*:bob:pa\\:ss\n*:*:*:*:fallback\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(lookup_pgpass(&f, "/tmp", "5433", "db", "bob").as_deref(), Some("pa:ss"));
        assert_eq!(lookup_pgpass(&f, "h", "1", "db", "x").as_deref(), Some("fallback"));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(lookup_pgpass(&f, "h", "1", "db", "x"), None);
    }
}
