//! The simulated account: managed instances, activation codes, ClientToken
//! replays and the record of effective deregistrations.
//!
//! Plain data behind one short-held mutex: every operation is a few map lookups,
//! so no lock is ever held across an await.

use crate::domain::resource::{Activation, ManagedInstance};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::SimulatorError;

/// A managed instance in a seed or state document: the API object plus its region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedInstance {
    /// The region the instance lives in.
    #[serde(rename = "RegionId")]
    pub region_id: String,
    /// The instance as `DescribeManagedInstances` shows it.
    #[serde(flatten)]
    pub instance: ManagedInstance,
}

/// An activation code in a seed or state document: the API object plus its region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedActivation {
    /// The region the code belongs to.
    #[serde(rename = "RegionId")]
    pub region_id: String,
    /// The code as `DescribeActivations` shows it.
    #[serde(flatten)]
    pub activation: Activation,
}

/// The starting state of the simulator, loadable from JSON (see `config/seed.json`).
///
/// Items use the API's own PascalCase field names plus `RegionId`, so a seed can be
/// written by copying API answers; numbers and booleans may be strings, as in the API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Seed {
    /// The managed instances.
    pub instances: Vec<SeedInstance>,
    /// The activation codes.
    pub activations: Vec<SeedActivation>,
}

impl Seed {
    /// Reads a seed from a JSON file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Seed, SimulatorError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| SimulatorError::SeedRead {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&text).map_err(|e| match e {
            SimulatorError::SeedParse { reason, .. } => SimulatorError::SeedParse {
                path: path.display().to_string(),
                reason,
            },
            other => other,
        })
    }

    /// Parses a seed from JSON text, refusing duplicate ids.
    pub fn from_json(text: &str) -> Result<Seed, SimulatorError> {
        let seed: Seed = serde_json::from_str(text).map_err(|e| SimulatorError::SeedParse {
            path: "<inline>".into(),
            reason: e.to_string(),
        })?;
        seed.validate()?;
        Ok(seed)
    }

    /// Rejects empty or duplicate ids, which would make the state ambiguous.
    pub fn validate(&self) -> Result<(), SimulatorError> {
        let bad = |reason: String| SimulatorError::SeedParse {
            path: "<seed>".into(),
            reason,
        };
        let mut seen = std::collections::HashSet::new();
        for i in &self.instances {
            if i.instance.instance_id.is_empty() || !seen.insert(&i.instance.instance_id) {
                return Err(bad(format!(
                    "empty or duplicate InstanceId {:?}",
                    i.instance.instance_id
                )));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for a in &self.activations {
            if a.activation.activation_id.is_empty() || !seen.insert(&a.activation.activation_id) {
                return Err(bad(format!(
                    "empty or duplicate ActivationId {:?}",
                    a.activation.activation_id
                )));
            }
        }
        Ok(())
    }
}

/// A successful idempotent answer remembered under its ClientToken.
#[derive(Debug, Clone)]
pub struct TokenEntry {
    /// The action and its parameters (ClientToken excluded), sorted: what must match.
    pub fingerprint: Vec<(String, String)>,
    /// The first answer's instance, replayed as is.
    pub instance: ManagedInstance,
}

/// The whole simulated account.
#[derive(Debug, Default)]
pub struct World {
    /// Instances by id (ordered, which makes paging tokens stable).
    pub instances: BTreeMap<String, SeedInstance>,
    /// Activation codes by id.
    pub activations: BTreeMap<String, SeedActivation>,
    /// Effective deregistrations per instance id: a count above 1 is a bug upstream.
    pub deregistrations: BTreeMap<String, u64>,
    /// Successful deregistrations by ClientToken, for replay.
    pub client_tokens: HashMap<String, TokenEntry>,
}

/// The state as `GET /_sim/state` shows it: a seed plus the deregistration record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct StateView {
    /// The instances still registered.
    pub instances: Vec<SeedInstance>,
    /// The activation codes that still exist.
    pub activations: Vec<SeedActivation>,
    /// Effective deregistrations per instance id.
    pub deregistrations: BTreeMap<String, u64>,
}

impl World {
    /// A world holding exactly what the seed describes.
    pub fn from_seed(seed: Seed) -> World {
        World {
            instances: seed
                .instances
                .into_iter()
                .map(|i| (i.instance.instance_id.clone(), i))
                .collect(),
            activations: seed
                .activations
                .into_iter()
                .map(|a| (a.activation.activation_id.clone(), a))
                .collect(),
            ..World::default()
        }
    }

    /// A snapshot for the control endpoint.
    pub fn view(&self) -> StateView {
        StateView {
            instances: self.instances.values().cloned().collect(),
            activations: self.activations.values().cloned().collect(),
            deregistrations: self.deregistrations.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_seed_parses_and_strings_are_tolerated() {
        let seed = Seed::from_json(include_str!("../../config/seed.json"));
        let seed = seed.ok().unwrap_or_default();
        assert_eq!(seed.instances.len(), 6);
        assert_eq!(seed.activations.len(), 3);
        let json = r#"{"Instances":[{"RegionId":"cn-hangzhou","InstanceId":"mi-1",
            "InvocationCount":"2","Connected":"true"}]}"#;
        let seed = Seed::from_json(json).ok().unwrap_or_default();
        let i = seed.instances.first().map(|i| &i.instance);
        assert_eq!(i.and_then(|i| i.invocation_count), Some(2));
        assert_eq!(i.and_then(|i| i.connected), Some(true));
    }

    #[test]
    fn duplicate_ids_and_garbage_are_refused() {
        let dup = r#"{"Instances":[{"RegionId":"r","InstanceId":"mi-1"},
            {"RegionId":"r","InstanceId":"mi-1"}]}"#;
        assert!(Seed::from_json(dup).is_err());
        assert!(Seed::from_json("[1,2]").is_err());
        assert!(Seed::from_json(r#"{"Activations":[{"RegionId":"r","Disabled":"no"}]}"#).is_err());
    }
}
