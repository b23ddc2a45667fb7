//! Citus topology: which servers make up the cluster, read from the coordinator's
//! pg_dist_node. The query lives here and only here.

use postgres::Client;

use crate::error::{pg_error, Result};
use crate::pg::conninfo::ConnInfo;

/// One active node per worker group with the wanted role; the coordinator (group 0) is
/// the server we are connected to and is not listed. Every name is schema-qualified
/// (Citus keeps pg_dist_node and the noderole type in pg_catalog): a table or type of the
/// same name in a schema earlier in the search path (a database owner can put one there,
/// and can put pg_catalog late in the path) cannot redirect the coordinator's credentials
/// to a host of its choosing. The session's search_path is pinned too (see `citus`).
pub const DIST_NODE_QUERY: &str = "SELECT DISTINCT ON (groupid) groupid, nodename, nodeport
       FROM pg_catalog.pg_dist_node
      WHERE isactive AND noderole = $1::pg_catalog.text::pg_catalog.noderole AND groupid <> 0
      ORDER BY groupid, nodeid";

/// Groups that have an active node of any role (to name the ones missing the wanted role).
pub const DIST_GROUPS_QUERY: &str =
    "SELECT DISTINCT groupid FROM pg_catalog.pg_dist_node WHERE isactive AND groupid <> 0 ORDER BY groupid";

/// Operators and casts in the queries resolve through the search path too: pin it.
const PIN_SEARCH_PATH: &str = "SELECT pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', false)";

/// The name `--discover citus` gives the coordinator; the helper creates a Citus restore
/// point through the node of this name.
pub const COORDINATOR: &str = "coordinator";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Primary,
    Secondary,
    /// Patroni's words (for Citus: primary, secondary); `sync` and `any` are Patroni's only.
    Leader,
    Replica,
    Sync,
    Any,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Primary | Role::Leader => "primary",
            Role::Secondary | Role::Replica => "secondary",
            Role::Sync => "sync",
            Role::Any => "any",
        }
    }
}

/// The nodes to back up: `coordinator` with the given settings, and `group-<id>` for each
/// worker group, reached with the coordinator's settings but the worker's host and port.
pub fn citus(coordinator: &ConnInfo, role: Role) -> Result<Vec<(String, ConnInfo)>> {
    let role = match role {
        Role::Primary | Role::Leader => Role::Primary,
        Role::Secondary | Role::Replica => Role::Secondary,
        Role::Sync | Role::Any => {
            return Err(crate::error::Error::usage(format!(
                "--discover citus: --discover-role {} is for Patroni; use primary or secondary",
                role.as_str()
            )))
        }
    };
    let mut c: Client = crate::pg::tls::connect(coordinator, "pg-backup-hooks discovery")
        .map_err(|e| err!("--discover citus: coordinator: {}", e))?;
    c.query(PIN_SEARCH_PATH, &[])
        .map_err(|e| err!("--discover citus: {}: {}", coordinator.endpoint(), pg_error(&e)))?;
    let rows = c.query(DIST_NODE_QUERY, &[&role.as_str()]).map_err(|e| {
        err!(
            "--discover citus: cannot read pg_dist_node on {} ({}): is this the Citus coordinator?",
            coordinator.endpoint(),
            pg_error(&e)
        )
    })?;
    let groups: Vec<i32> = c
        .query(DIST_GROUPS_QUERY, &[])
        .map_err(|e| err!("--discover citus: {}", pg_error(&e)))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let found: Vec<i32> = rows.iter().map(|r| r.get::<_, i32>(0)).collect();
    let missing: Vec<String> = groups.iter().filter(|g| !found.contains(g)).map(|g| g.to_string()).collect();
    if !missing.is_empty() {
        return Err(err!(
            "--discover citus: worker group(s) {} have no active {} node; add one, or back up with --discover-role {}",
            missing.join(", "),
            role.as_str(),
            if role == Role::Primary { "secondary" } else { "primary" }
        ));
    }
    let mut nodes = vec![(COORDINATOR.to_string(), coordinator.clone())];
    for r in rows {
        let group: i32 = r.get(0);
        let host: String = r.get(1);
        let port: i32 = r.get(2);
        let mut ci = coordinator.clone();
        ci.set("host", host);
        ci.set("hostaddr", "");
        ci.set("port", port.to_string());
        nodes.push((format!("group-{}", group), ci));
    }
    Ok(nodes)
}

/// What `--discover patroni=URL,...` backs up: one member, named as Patroni names it.
pub struct PatroniNode {
    pub name: String,
    pub conninfo: ConnInfo,
    /// For a replica: its leader, where the restore point and the WAL switch happen.
    pub primary: Option<ConnInfo>,
    /// The member as the REST API described it, for the log.
    pub described: String,
    /// What post compares the cluster against.
    pub seen: crate::pg::patroni::Seen,
}

/// The Patroni member with the wanted role, reached with `template`'s settings (user,
/// dbname, sslmode, ...) but the member's host and port, and its leader for a replica.
pub fn patroni(template: &ConnInfo, urls: &[String], role: Role) -> Result<PatroniNode> {
    use crate::pg::patroni::{self, Want};
    let want = match role {
        Role::Primary | Role::Leader => Want::Leader,
        Role::Secondary | Role::Replica => Want::Replica,
        Role::Sync => Want::Sync,
        Role::Any => Want::Any,
    };
    let (url, members) = patroni::cluster(urls).map_err(|e| e.within("--discover patroni"))?;
    let choice = patroni::choose(&members, want).map_err(|e| e.within(format_args!("--discover patroni ({})", url)))?;
    let at = |m: &patroni::Member| {
        let mut ci = template.clone();
        ci.set("host", m.host.clone());
        ci.set("hostaddr", "");
        ci.set("port", m.port.to_string());
        ci
    };
    Ok(PatroniNode {
        name: choice.member.name.clone(),
        conninfo: at(&choice.member),
        primary: choice.leader.as_ref().map(at),
        described: choice.member.describe(),
        seen: patroni::Seen::new(urls, &choice),
    })
}
