//! Which source a command discovers with: ECS (`--family`, `--service`) or
//! AWS Cloud Map (`--cloud-map`).

use std::time::Duration;

use anyhow::Result;

use super::cloudmap::{self, CloudMap};
use super::{Discovery, Query, Source};
use crate::aws::Clients;
use crate::snapshot::Snapshot;

/// What to discover, and where.
#[derive(Clone, Debug)]
pub enum Select {
    /// The tasks of an ECS family or service.
    Ecs(Query),
    /// The instances of an AWS Cloud Map service.
    CloudMap(cloudmap::Query),
}

impl From<Query> for Select {
    fn from(query: Query) -> Self {
        Select::Ecs(query)
    }
}

impl From<cloudmap::Query> for Select {
    fn from(query: cloudmap::Query) -> Self {
        Select::CloudMap(query)
    }
}

impl Select {
    /// The source for this choice, on already-built `clients`, refreshing
    /// what it knows of each target's health every `health_refresh`.
    pub fn source(self, clients: Clients, health_refresh: Duration) -> Sources {
        match self {
            Select::Ecs(query) => Sources::Ecs(
                Discovery::new(clients.ecs(), clients.ec2(), query).health_refresh(health_refresh),
            ),
            Select::CloudMap(query) => Sources::CloudMap(
                CloudMap::new(clients.servicediscovery(), query).health_refresh(health_refresh),
            ),
        }
    }
}

/// Either source, as one [`Source`].
#[derive(Debug)]
pub enum Sources {
    /// ECS.
    Ecs(Discovery),
    /// AWS Cloud Map.
    CloudMap(CloudMap),
}

impl Source for Sources {
    async fn round(&mut self, between: Duration) -> Result<Snapshot> {
        match self {
            Sources::Ecs(source) => source.round(between).await,
            Sources::CloudMap(source) => source.round().await,
        }
    }

    fn describe(&self) -> String {
        match self {
            Sources::Ecs(source) => Source::describe(source),
            Sources::CloudMap(source) => Source::describe(source),
        }
    }
}
