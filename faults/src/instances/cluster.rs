//! A private RabbitMQ cluster: [`PrivateRabbit`] nodes sharing one Erlang
//! cookie, the second and later joined to the first with `rabbitmqctl
//! stop_app`, `join_cluster`, `start_app`.
//!
//! Every node is private as a single one is: its own node name, ports, data
//! folder and cookie file (the same cookie in each), none of it shared with
//! the machine's own node, which never hears of them. The nodes know each
//! other through the machine's epmd, like any node on it. Dropping the
//! cluster drops every node: each is killed and its folder removed, also
//! while a panicking test unwinds.
//!
//! A quorum queue declared once the cluster has formed gets a member on every
//! node (RabbitMQ 3.10 without `x-quorum-initial-group-size` makes one on
//! each running node), so it keeps a majority, and its messages, when any
//! single node of three is lost.

use std::io;

use tokio::task::JoinSet;
use tracing::debug;

use super::rabbit::{PrivateRabbit, new_cookie};

/// A cluster of private RabbitMQ nodes on `127.0.0.1`.
pub struct PrivateRabbitCluster {
    nodes: Vec<PrivateRabbit>,
}

/// A queue and the nodes its members run on, as `rabbitmqctl list_queues`
/// tells them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMembers {
    pub name: String,
    /// `quorum`, `classic` or `stream`.
    pub kind: String,
    /// The node leading a quorum queue (holding a classic one); empty when
    /// none does.
    pub leader: String,
    /// The nodes holding a member (a replica) of a quorum queue; empty for
    /// other kinds.
    pub members: Vec<String>,
}

impl PrivateRabbitCluster {
    /// Boots `size` nodes side by side, joins the second and later to the
    /// first, and returns once each has restarted as a member of the cluster.
    /// On a busy two-core machine that takes well under a minute for three.
    pub async fn start(size: usize) -> io::Result<PrivateRabbitCluster> {
        assert!(size >= 1, "a cluster needs a node");
        let cookie = new_cookie();
        let mut booting = JoinSet::new();
        for index in 0..size {
            let cookie = cookie.clone();
            booting.spawn(async move { (index, PrivateRabbit::start_with_cookie(&cookie).await) });
        }
        let mut booted: Vec<(usize, PrivateRabbit)> = Vec::new();
        let mut first_error = None;
        while let Some(joined) = booting.join_next().await {
            match joined.map_err(io::Error::other) {
                Ok((index, Ok(node))) => booted.push((index, node)),
                Ok((_, Err(error))) | Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        // Nodes that booted are dropped (killed, removed) with `booted`.
        if let Some(error) = first_error {
            return Err(error);
        }
        booted.sort_by_key(|(index, _)| *index);
        let cluster = PrivateRabbitCluster {
            nodes: booted.into_iter().map(|(_, node)| node).collect(),
        };
        let first = cluster.nodes[0].node().to_owned();
        for node in &cluster.nodes[1..] {
            node.rabbitmqctl(&["stop_app"]).await?;
            node.rabbitmqctl(&["join_cluster", &first]).await?;
            node.rabbitmqctl(&["start_app"]).await?;
            node.rabbitmqctl(&["await_startup"]).await?;
            debug!(node = node.node(), %first, "private rabbitmq joined the cluster");
        }
        let running = cluster.running_nodes().await?;
        if running.len() != size {
            return Err(io::Error::other(format!(
                "the cluster formed with {} running nodes of {size}: {running:?}",
                running.len()
            )));
        }
        Ok(cluster)
    }

    /// Every node, in the order they were started; the first is the one the
    /// others joined.
    pub fn nodes(&self) -> &[PrivateRabbit] {
        &self.nodes
    }

    /// The node at `index`, to stop, kill or start again.
    pub fn node_mut(&mut self, index: usize) -> &mut PrivateRabbit {
        &mut self.nodes[index]
    }

    /// Each node's AMQP URL, in node order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(PrivateRabbit::url).collect()
    }

    /// Every node's URL, comma-separated: what `--amqp-url` takes for a
    /// cluster.
    pub fn url_list(&self) -> String {
        self.urls().join(",")
    }

    /// Kills the node at `index` with SIGKILL, as a crash would. The others
    /// carry on: a quorum queue with a member on each of three nodes keeps
    /// its majority.
    pub async fn kill(&mut self, index: usize) -> io::Result<()> {
        self.nodes[index].kill().await
    }

    /// Boots the node at `index` again after [`PrivateRabbitCluster::kill`];
    /// it rejoins the cluster with the data it had.
    pub async fn start_again(&mut self, index: usize) -> io::Result<()> {
        self.nodes[index].start_again().await
    }

    /// The nodes the first running node sees running in the cluster.
    pub async fn running_nodes(&self) -> io::Result<Vec<String>> {
        let text = self
            .any_running()?
            .rabbitmqctl_output(&["eval", "rabbit_nodes:all_running()."])
            .await?;
        Ok(erlang_atoms(&text))
    }

    /// Every queue of the default vhost with its kind, leader and members,
    /// as a running node sees them.
    pub async fn queues(&self) -> io::Result<Vec<QueueMembers>> {
        let text = self
            .any_running()?
            .rabbitmqctl_output(&[
                "list_queues",
                "--quiet",
                "--no-table-headers",
                "name",
                "type",
                "leader",
                "members",
            ])
            .await?;
        Ok(text.lines().filter_map(parse_queue_line).collect())
    }

    fn any_running(&self) -> io::Result<&PrivateRabbit> {
        // `is_running` needs `&mut`; a node that was killed has no server.
        self.nodes
            .iter()
            .find(|node| node.has_server())
            .ok_or_else(|| io::Error::other("no node of the cluster is running"))
    }
}

/// `name\ttype\tleader\t[member, member]` as `list_queues name type leader
/// members` prints it.
fn parse_queue_line(line: &str) -> Option<QueueMembers> {
    let mut columns = line.split('\t');
    let name = columns.next()?.trim().to_owned();
    let kind = columns.next()?.trim().to_owned();
    let leader = columns
        .next()
        .unwrap_or("")
        .trim()
        .trim_matches('\'')
        .to_owned();
    let members = erlang_atoms(columns.next().unwrap_or(""));
    (!name.is_empty()).then_some(QueueMembers {
        name,
        kind,
        leader,
        members,
    })
}

/// The node names in an Erlang list as `rabbitmqctl` prints one:
/// `['corebank-1@localhost','corebank-2@localhost']` or `[a@b, c@d]`.
fn erlang_atoms(text: &str) -> Vec<String> {
    text.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .map(|atom| atom.trim().trim_matches('\'').trim_matches('"').to_owned())
        .filter(|atom| atom.contains('@'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quorum_queue_line_gives_its_members() {
        let line = "ns.account.commands\tquorum\tcorebank-b@localhost\t\
                    [corebank-a@localhost, corebank-b@localhost, corebank-c@localhost]";
        let parsed = parse_queue_line(line).unwrap();
        assert_eq!(parsed.name, "ns.account.commands");
        assert_eq!(parsed.kind, "quorum");
        assert_eq!(parsed.leader, "corebank-b@localhost");
        assert_eq!(
            parsed.members,
            vec![
                "corebank-a@localhost",
                "corebank-b@localhost",
                "corebank-c@localhost"
            ]
        );
    }

    #[test]
    fn a_classic_queue_line_has_no_members() {
        let parsed = parse_queue_line("plain\tclassic\tcorebank-a@localhost\t").unwrap();
        assert!(parsed.members.is_empty());
    }

    #[test]
    fn quoted_atoms_are_unquoted() {
        assert_eq!(
            erlang_atoms("['corebank-a@localhost','corebank-b@localhost']\n"),
            vec!["corebank-a@localhost", "corebank-b@localhost"]
        );
    }
}
