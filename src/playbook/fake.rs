//! A scripted in-memory cloud for playbook tests: a small world of instances
//! and activation codes with the API's semantics, plus queued failures.

use crate::command::{InstanceId, RegionId};
use crate::domain::cloud::{Called, Cloud, InstanceFilter, InstancePage};
use crate::domain::error::{ApiAction, ApiError};
use crate::domain::resource::{Activation, ManagedInstance};
use crate::retry::{NoObserver, Retrier, RetryBudget, RetryPolicy};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
pub struct World {
    pub instances: Vec<ManagedInstance>,
    pub activations: Vec<Activation>,
    pub failures: HashMap<ApiAction, VecDeque<ApiError>>,
    pub calls: Vec<(ApiAction, String)>,
    pub page_size: usize,
}

#[derive(Default)]
pub struct FakeCloud {
    pub world: Mutex<World>,
}

pub fn instance(id: &str, host: &str, activation: &str, registered: &str) -> ManagedInstance {
    ManagedInstance {
        instance_id: id.into(),
        hostname: Some(host.into()),
        machine_id: Some(format!("machine-{id}")),
        intranet_ip: Some("10.0.0.1".into()),
        activation_id: Some(activation.into()),
        registration_time: Some(registered.into()),
        ..ManagedInstance::default()
    }
}

pub fn activation(id: &str, registered: u64) -> Activation {
    Activation {
        activation_id: id.into(),
        registered_count: Some(registered),
        disabled: Some(false),
        ..Activation::default()
    }
}

pub fn api_error(status: u16, code: &str) -> ApiError {
    ApiError::Api {
        http_status: status,
        code: code.into(),
        message: format!("{code} (scripted)"),
        request_id: Some("req-err".into()),
        retry_after: None,
    }
}

pub fn retrier() -> Retrier {
    Retrier {
        policy: RetryPolicy {
            initial_interval: Duration::from_millis(100),
            max_interval: Duration::from_millis(400),
            max_elapsed: Duration::from_millis(1000),
            randomization_factor: 0.0,
        },
        budget: RetryBudget::new(500),
        shutdown: CancellationToken::new(),
        observer: Arc::new(NoObserver),
        stages: std::num::NonZeroUsize::new(3).unwrap_or(std::num::NonZeroUsize::MIN),
        limiter: None,
    }
}

impl FakeCloud {
    pub fn new(instances: Vec<ManagedInstance>, activations: Vec<Activation>) -> Self {
        Self {
            world: Mutex::new(World {
                instances,
                activations,
                page_size: 2,
                ..World::default()
            }),
        }
    }

    /// The next `n` calls of `action` fail with `error`.
    pub fn fail(&self, action: ApiAction, n: usize, error: ApiError) {
        let mut w = self.world.lock().expect("lock");
        let q = w.failures.entry(action).or_default();
        for _ in 0..n {
            q.push_back(error.clone());
        }
    }

    pub fn calls(&self, action: ApiAction) -> Vec<String> {
        let w = self.world.lock().expect("lock");
        w.calls
            .iter()
            .filter(|(a, _)| *a == action)
            .map(|(_, arg)| arg.clone())
            .collect()
    }

    pub fn has_instance(&self, id: &str) -> bool {
        let w = self.world.lock().expect("lock");
        w.instances.iter().any(|i| i.instance_id == id)
    }

    fn begin(
        &self,
        action: ApiAction,
        arg: String,
    ) -> Result<std::sync::MutexGuard<'_, World>, ApiError> {
        let mut w = self.world.lock().expect("lock");
        w.calls.push((action, arg));
        if let Some(e) = w.failures.get_mut(&action).and_then(VecDeque::pop_front) {
            return Err(e);
        }
        Ok(w)
    }
}

fn ok<T>(value: T) -> Result<Called<T>, ApiError> {
    Ok(Called {
        value,
        request_id: Some("req-ok".into()),
    })
}

impl Cloud for FakeCloud {
    async fn deregister(
        &self,
        _region: &RegionId,
        instance: &InstanceId,
        client_token: &str,
    ) -> Result<Called<Option<ManagedInstance>>, ApiError> {
        let mut w = self.begin(
            ApiAction::DeregisterManagedInstance,
            format!("{instance}|{client_token}"),
        )?;
        match w
            .instances
            .iter()
            .position(|i| i.instance_id == instance.as_str())
        {
            Some(pos) => ok(Some(w.instances.remove(pos))),
            None => Err(api_error(404, "InvalidInstance.NotFound")),
        }
    }

    async fn disable_activation(
        &self,
        _region: &RegionId,
        activation_id: &str,
    ) -> Result<Called<Option<Activation>>, ApiError> {
        let mut w = self.begin(ApiAction::DisableActivation, activation_id.into())?;
        match w
            .activations
            .iter_mut()
            .find(|a| a.activation_id == activation_id)
        {
            Some(a) => {
                a.disabled = Some(true);
                ok(Some(a.clone()))
            }
            None => Err(api_error(404, "ActivationId.NotFound")),
        }
    }

    async fn delete_activation(
        &self,
        _region: &RegionId,
        activation_id: &str,
    ) -> Result<Called<Option<Activation>>, ApiError> {
        let mut w = self.begin(ApiAction::DeleteActivation, activation_id.into())?;
        match w
            .activations
            .iter()
            .position(|a| a.activation_id == activation_id)
        {
            Some(pos) if w.activations[pos].registered_count.unwrap_or(0) > 0 => {
                Err(api_error(403, "ActivationId.InUse"))
            }
            Some(pos) => ok(Some(w.activations.remove(pos))),
            None => Err(api_error(404, "ActivationId.NotFound")),
        }
    }

    async fn describe_activation(
        &self,
        _region: &RegionId,
        activation_id: &str,
    ) -> Result<Called<Option<Activation>>, ApiError> {
        let w = self.begin(ApiAction::DescribeActivations, activation_id.into())?;
        ok(w.activations
            .iter()
            .find(|a| a.activation_id == activation_id)
            .cloned())
    }

    async fn describe_instances(
        &self,
        _region: &RegionId,
        filter: &InstanceFilter,
        next_token: Option<&str>,
    ) -> Result<Called<InstancePage>, ApiError> {
        let w = self.begin(ApiAction::DescribeManagedInstances, format!("{filter:?}"))?;
        let all: Vec<ManagedInstance> = w
            .instances
            .iter()
            .filter(|i| match filter {
                InstanceFilter::All => true,
                InstanceFilter::InstanceId(id) => &i.instance_id == id,
                InstanceFilter::MachineId(m) => i.machine_id.as_ref() == Some(m),
                InstanceFilter::InstanceIp(ip) => {
                    i.intranet_ip.as_ref() == Some(ip) || i.internet_ip.as_ref() == Some(ip)
                }
                InstanceFilter::ActivationId(a) => i.activation_id.as_ref() == Some(a),
            })
            .cloned()
            .collect();
        let start: usize = next_token.and_then(|t| t.parse().ok()).unwrap_or(0);
        let end = (start + w.page_size).min(all.len());
        let page = all.get(start..end).map(<[_]>::to_vec).unwrap_or_default();
        ok(InstancePage {
            instances: page,
            next_token: (end < all.len()).then(|| end.to_string()),
        })
    }
}

/// Parses a command the way the worker does (regions cn-hangzhou/cn-beijing).
pub fn command(kind: crate::command::CommandKind, json: &str) -> crate::command::Command {
    let policy = crate::command::Policy {
        allowed_regions: vec!["cn-hangzhou".into(), "cn-beijing".into()],
        delete_if_unused_default: true,
        known_accounts: Default::default(),
        max_body_bytes: crate::command::DEFAULT_MAX_BODY_BYTES,
    };
    let envelope = crate::command::Envelope {
        kind,
        body: json.as_bytes(),
        content_type: Some("application/json"),
        message_id: None,
    };
    match crate::command::parse(&envelope, &policy) {
        Ok(c) => c,
        Err(r) => panic!("test command rejected: {r:?}"),
    }
}
