//! The five Cloud Assistant operations, with the real service's error codes and statuses.
//!
//! Pure functions over [`World`]: the server calls them under the state lock and
//! serializes the answer after releasing it.

use super::state::{TokenEntry, World};
use crate::domain::resource::{Activation, ManagedInstance};
use crate::ecs::model::{
    DeleteActivationResponse, DeregisterManagedInstanceResponse, DescribeActivationsResponse,
    DescribeManagedInstancesResponse, DisableActivationResponse,
};
use base64::Engine as _;
use serde::Serialize;
use std::borrow::Cow;

/// An error answer: the code, HTTP status and message the real API would send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: u16,
    /// Alibaba error code.
    pub code: Cow<'static, str>,
    /// Human-readable message.
    pub message: String,
    /// `x-acs-retry-after` in milliseconds, for throttling faults.
    pub retry_after_ms: Option<u64>,
}

impl ApiError {
    /// An error with a fixed code.
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: Cow::Borrowed(code),
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// `MissingParameter` for a required parameter.
    pub fn missing(name: &str) -> Self {
        Self::new(
            400,
            "MissingParameter",
            format!(
                "The input parameter \"{name}\" that is mandatory for processing this request is not supplied."
            ),
        )
    }

    fn invalid(name: &str, value: &str) -> Self {
        Self::new(
            400,
            "InvalidParameter",
            format!("The specified parameter \"{name}\" ({value:?}) is not valid."),
        )
    }
}

/// A successful answer of any of the operations.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Answer {
    /// `DeregisterManagedInstance`.
    Deregister(DeregisterManagedInstanceResponse),
    /// `DisableActivation`.
    Disable(DisableActivationResponse),
    /// `DeleteActivation`.
    Delete(DeleteActivationResponse),
    /// `DescribeManagedInstances`.
    Instances(DescribeManagedInstancesResponse),
    /// `DescribeActivations`.
    Activations(DescribeActivationsResponse),
    /// STS `AssumeRole`.
    AssumeRole(crate::credentials::sts::AssumeRoleResponse),
}

/// The operations the simulator implements; anything else is `InvalidAction.NotFound`.
pub const ACTIONS: &[&str] = &[
    "DeregisterManagedInstance",
    "DisableActivation",
    "DeleteActivation",
    "DescribeManagedInstances",
    "DescribeActivations",
];

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

fn required<'a>(params: &'a [(String, String)], name: &str) -> Result<&'a str, ApiError> {
    param(params, name).ok_or_else(|| ApiError::missing(name))
}

/// Checks the action and its `RegionId` before any state is touched.
pub fn precheck(
    action: &str,
    params: &[(String, String)],
    allowed_regions: &[String],
) -> Result<(), ApiError> {
    if !ACTIONS.contains(&action) {
        return Err(ApiError::new(
            404,
            "InvalidAction.NotFound",
            "Specified api is not found, please check your url and method.",
        ));
    }
    let region = required(params, "RegionId")?;
    if !allowed_regions.iter().any(|r| r == region) {
        return Err(ApiError::new(
            400,
            "RegionId.ApiNotSupported",
            format!("The api is not supported in region {region:?}."),
        ));
    }
    Ok(())
}

/// Runs one verified call against the world.
pub fn execute(
    world: &mut World,
    action: &str,
    params: &[(String, String)],
    request_id: &str,
) -> Result<Answer, ApiError> {
    let region = required(params, "RegionId")?;
    let request_id = request_id.to_owned();
    match action {
        "DeregisterManagedInstance" => deregister(world, region, params).map(|instance| {
            Answer::Deregister(DeregisterManagedInstanceResponse {
                request_id,
                instance: Some(instance),
            })
        }),
        "DisableActivation" => disable(world, region, params).map(|a| {
            Answer::Disable(DisableActivationResponse {
                request_id,
                activation: Some(a),
            })
        }),
        "DeleteActivation" => delete(world, region, params).map(|a| {
            Answer::Delete(DeleteActivationResponse {
                request_id,
                activation: Some(a),
            })
        }),
        "DescribeManagedInstances" => describe_instances(world, region, params).map(|mut r| {
            r.request_id = request_id;
            Answer::Instances(r)
        }),
        "DescribeActivations" => describe_activations(world, region, params).map(|mut r| {
            r.request_id = request_id;
            Answer::Activations(r)
        }),
        _ => Err(ApiError::new(
            404,
            "InvalidAction.NotFound",
            "Specified api is not found, please check your url and method.",
        )),
    }
}

fn deregister(
    world: &mut World,
    region: &str,
    params: &[(String, String)],
) -> Result<ManagedInstance, ApiError> {
    let id = required(params, "InstanceId")?;
    let token = param(params, "ClientToken");
    let fingerprint = token.map(|_| {
        let mut f: Vec<(String, String)> = params
            .iter()
            .filter(|(k, _)| k != "ClientToken")
            .cloned()
            .collect();
        f.sort();
        f
    });
    if let (Some(token), Some(fp)) = (token, fingerprint.as_ref())
        && let Some(entry) = world.client_tokens.get(token)
    {
        return if entry.fingerprint == *fp {
            Ok(entry.instance.clone())
        } else {
            Err(ApiError::new(
                400,
                "IdempotentParameterMismatch",
                "The specified parameter has changed while using an already used clientToken.",
            ))
        };
    }
    let not_found = || {
        ApiError::new(
            404,
            "InvalidInstance.NotFound",
            format!("The specified instance {id:?} does not exist."),
        )
    };
    if world
        .instances
        .get(id)
        .is_none_or(|i| i.region_id != region)
    {
        return Err(not_found());
    }
    let removed = world.instances.remove(id).ok_or_else(not_found)?;
    *world.deregistrations.entry(id.to_owned()).or_default() += 1;
    if let Some(act) = removed
        .instance
        .activation_id
        .as_ref()
        .and_then(|a| world.activations.get_mut(a))
    {
        let c = act.activation.deregistered_count.unwrap_or(0);
        act.activation.deregistered_count = Some(c + 1);
    }
    if let (Some(token), Some(fingerprint)) = (token, fingerprint) {
        world.client_tokens.insert(
            token.to_owned(),
            TokenEntry {
                fingerprint,
                instance: removed.instance.clone(),
            },
        );
    }
    Ok(removed.instance)
}

fn activation_mut<'a>(
    world: &'a mut World,
    region: &str,
    id: &str,
) -> Result<&'a mut Activation, ApiError> {
    world
        .activations
        .get_mut(id)
        .filter(|a| a.region_id == region)
        .map(|a| &mut a.activation)
        .ok_or_else(|| {
            ApiError::new(
                404,
                "ActivationId.NotFound",
                format!("The specified activation code {id:?} does not exist."),
            )
        })
}

fn disable(
    world: &mut World,
    region: &str,
    params: &[(String, String)],
) -> Result<Activation, ApiError> {
    let id = required(params, "ActivationId")?;
    let act = activation_mut(world, region, id)?;
    act.disabled = Some(true);
    Ok(act.clone())
}

fn delete(
    world: &mut World,
    region: &str,
    params: &[(String, String)],
) -> Result<Activation, ApiError> {
    let id = required(params, "ActivationId")?;
    let act = activation_mut(world, region, id)?;
    if act.registered_count.unwrap_or(0) > 0 {
        return Err(ApiError::new(
            403,
            "ActivationId.InUse",
            "The activation code has been used to register instances and cannot be deleted.",
        ));
    }
    let act = act.clone();
    world.activations.remove(id);
    Ok(act)
}

/// Which page to serve: `MaxResults`/`NextToken` (token paging) or `PageNumber`/`PageSize`.
struct Paging {
    after: Option<String>,
    skip: usize,
    size: usize,
    token_mode: bool,
    page_number: u64,
}

const DEFAULT_PAGE: u64 = 10;
const MAX_PAGE: u64 = 50;

fn number(
    params: &[(String, String)],
    name: &str,
    default: u64,
    max: u64,
) -> Result<u64, ApiError> {
    match param(params, name) {
        None => Ok(default),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::invalid(name, v)),
        },
    }
}

fn paging(params: &[(String, String)]) -> Result<Paging, ApiError> {
    let token = param(params, "NextToken");
    if token.is_some() || param(params, "MaxResults").is_some() {
        let size = number(params, "MaxResults", DEFAULT_PAGE, MAX_PAGE)?;
        let after = match token {
            None => None,
            Some(t) => Some(decode_token(t).ok_or_else(|| ApiError::invalid("NextToken", t))?),
        };
        return Ok(Paging {
            after,
            skip: 0,
            size: usize::try_from(size).unwrap_or(usize::MAX),
            token_mode: true,
            page_number: 1,
        });
    }
    let size = number(params, "PageSize", DEFAULT_PAGE, MAX_PAGE)?;
    let page = number(params, "PageNumber", 1, u64::from(u32::MAX))?;
    let skip = (page - 1).saturating_mul(size);
    Ok(Paging {
        after: None,
        skip: usize::try_from(skip).unwrap_or(usize::MAX),
        size: usize::try_from(size).unwrap_or(usize::MAX),
        token_mode: false,
        page_number: page,
    })
}

fn encode_token(last_id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("after:{last_id}"))
}

fn decode_token(token: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    String::from_utf8(bytes)
        .ok()?
        .strip_prefix("after:")
        .map(str::to_owned)
}

/// One page of `items` (already filtered, ordered by id) and the next token, if any.
fn page<T>(items: Vec<(String, T)>, p: &Paging) -> (Vec<T>, Option<String>, u64) {
    let total = items.len() as u64;
    let start = match &p.after {
        Some(after) => items.partition_point(|(id, _)| id.as_str() <= after.as_str()),
        None => p.skip.min(items.len()),
    };
    let end = start.saturating_add(p.size).min(items.len());
    let next = (p.token_mode && end < items.len())
        .then(|| {
            items
                .get(end.saturating_sub(1))
                .map(|(id, _)| encode_token(id))
        })
        .flatten();
    let page = items
        .into_iter()
        .skip(start)
        .take(end - start)
        .map(|(_, t)| t)
        .collect();
    (page, next, total)
}

fn describe_instances(
    world: &World,
    region: &str,
    params: &[(String, String)],
) -> Result<DescribeManagedInstancesResponse, ApiError> {
    let p = paging(params)?;
    let ids: Vec<&str> = params
        .iter()
        .filter(|(k, v)| {
            !v.is_empty()
                && k.strip_prefix("InstanceId.")
                    .is_some_and(|n| n.parse::<u8>().is_ok_and(|n| (1..=50).contains(&n)))
        })
        .map(|(_, v)| v.as_str())
        .collect();
    let activation = param(params, "ActivationId");
    let ip = param(params, "InstanceIp");
    let machine = param(params, "MachineId");
    let name = param(params, "InstanceName");
    let os = param(params, "OsType");
    let items: Vec<(String, ManagedInstance)> = world
        .instances
        .values()
        .filter(|s| s.region_id == region)
        .map(|s| &s.instance)
        .filter(|i| ids.is_empty() || ids.contains(&i.instance_id.as_str()))
        .filter(|i| activation.is_none_or(|a| i.activation_id.as_deref() == Some(a)))
        .filter(|i| {
            ip.is_none_or(|ip| {
                i.intranet_ip.as_deref() == Some(ip) || i.internet_ip.as_deref() == Some(ip)
            })
        })
        .filter(|i| machine.is_none_or(|m| i.machine_id.as_deref() == Some(m)))
        .filter(|i| name.is_none_or(|n| i.instance_name.as_deref() == Some(n)))
        .filter(|i| {
            os.is_none_or(|o| {
                i.os_type
                    .as_deref()
                    .is_some_and(|t| t.eq_ignore_ascii_case(o))
            })
        })
        .map(|i| (i.instance_id.clone(), i.clone()))
        .collect();
    let (instances, next_token, total) = page(items, &p);
    Ok(DescribeManagedInstancesResponse {
        request_id: String::new(),
        total_count: Some(total),
        next_token,
        page_number: (!p.token_mode).then_some(p.page_number),
        page_size: (!p.token_mode).then_some(p.size as u64),
        instances,
    })
}

fn describe_activations(
    world: &World,
    region: &str,
    params: &[(String, String)],
) -> Result<DescribeActivationsResponse, ApiError> {
    let p = paging(params)?;
    let id = param(params, "ActivationId");
    let name = param(params, "InstanceName");
    let items: Vec<(String, Activation)> = world
        .activations
        .values()
        .filter(|s| s.region_id == region)
        .map(|s| &s.activation)
        .filter(|a| id.is_none_or(|id| a.activation_id == id))
        .filter(|a| name.is_none_or(|n| a.instance_name.as_deref() == Some(n)))
        .map(|a| (a.activation_id.clone(), a.clone()))
        .collect();
    let (activation_list, next_token, total) = page(items, &p);
    Ok(DescribeActivationsResponse {
        request_id: String::new(),
        total_count: Some(total),
        next_token,
        page_number: (!p.token_mode).then_some(p.page_number),
        page_size: (!p.token_mode).then_some(p.size as u64),
        activation_list,
    })
}
