//! `GET|POST /admin/containers`, `PUT|DELETE /admin/containers/{id}`: the operator deploys and
//! withdraws containers while the node runs, so a new model reaches chosen nodes without a shell
//! on them.
//!
//! An entry is checked as `config.json` checks it, together with the containers the node runs
//! (ids and ports must stay unique), then its image is pulled, it is started and must answer
//! before it is served. The list is kept in the admin state and replaces `config.json`'s
//! containers from then on, also across restarts. Changes are made one at a time.
//!
//! Off-chain jobs see a change at once; the chain side (its pipeline lookup) sees it at the next
//! start.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
};
use infernet_identity::npub;
use infernet_types::settings::{Limits, Problem, Problems};
use serde_json::{Value, json};

use super::{Refusal, Signed};
use crate::{
    config::{self, ConfigProblem, ContainerConfig, ContainerSpec, Runtime, ValidConfig},
    server::AppState,
};

/// Most containers a node runs once the operator manages them (each has a port, a watcher and
/// a share of the host).
pub const MAX_CONTAINERS: usize = 64;

/// The entries of `config.json`'s `containers` list, parsed as the node parses the file. Problems
/// name `containers[i].field`; unknown keys are returned (the file only warns about them).
pub(crate) fn parse_entries(entries: &[Value]) -> Result<(Vec<ContainerConfig>, Vec<String>), Vec<ConfigProblem>> {
    let text = json!({ "containers": entries }).to_string();
    match config::parse(&text) {
        Ok(loaded) => Ok((loaded.config.containers, loaded.unknown_keys)),
        Err(e) => Err(vec![ConfigProblem {
            path: e.path.unwrap_or_else(|| "containers".into()),
            message: e.message,
        }]),
    }
}

/// `base` running `containers` instead of its own: every check of the config file.
pub(crate) fn with_containers(
    base: &ValidConfig,
    containers: Vec<ContainerConfig>,
    unknown_keys: &[String],
) -> Result<ValidConfig, Vec<ConfigProblem>> {
    let mut config = base.config.clone();
    config.containers = containers;
    config::validate(config, unknown_keys)
}

/// Gives each of `specs` its `limits` from the provider's settings.
pub(crate) fn limit(specs: &mut [ContainerSpec], limits: &BTreeMap<String, Limits>) {
    for spec in specs {
        spec.limits = limits.get(&spec.id).cloned().unwrap_or_default();
    }
}

/// The entry kept for `spec`: as the operator wrote it, with the port the node gave it (a port
/// left out is assigned by position, which a later removal would change).
fn kept_entry(spec: &ContainerSpec) -> Value {
    let mut entry = spec.raw.to_entry();
    if !matches!(spec.runtime, Runtime::Remote) {
        entry["port"] = json!(spec.port);
    }
    entry
}

/// The problems of the entry at `index`, named by its own fields (`port`, `image`).
fn of_entry(problems: Vec<ConfigProblem>, index: usize) -> Refusal {
    let prefix = format!("containers[{index}].");
    let problems = problems
        .into_iter()
        .map(|p| Problem {
            path: p.path.strip_prefix(&prefix).map_or(p.path.clone(), str::to_string),
            message: p.message,
        })
        .collect();
    Refusal::Invalid(Problems(problems))
}

fn problem(path: &str, message: impl Into<String>) -> Refusal {
    Refusal::Invalid(Problems(vec![Problem {
        path: path.into(),
        message: message.into(),
    }]))
}

/// The body as one entry; unknown keys are refused (a typo would otherwise go unnoticed).
fn entry_of(body: &[u8]) -> Result<ContainerConfig, Refusal> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| Refusal::BadRequest(format!("the body is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(Refusal::BadRequest(
            "the body must be one container entry: a JSON object as in config.json's `containers`".into(),
        ));
    }
    let (mut entries, unknown) = parse_entries(&[value]).map_err(|p| of_entry(p, 0))?;
    if !unknown.is_empty() {
        return Err(of_entry(
            unknown
                .into_iter()
                .map(|path| ConfigProblem {
                    path,
                    message: "unknown key; check its spelling against the config reference".into(),
                })
                .collect(),
            0,
        ));
    }
    Ok(entries.remove(0))
}

/// `config` checked with `entries` in place of its containers, the problems of the one at
/// `index` named by its fields; also the Orchestrator must be able to call each.
fn checked(state: &AppState, entries: Vec<ContainerConfig>, index: usize) -> Result<ValidConfig, Refusal> {
    let mut valid = with_containers(&state.config, entries, &[]).map_err(|p| of_entry(p, index))?;
    state
        .admin
        .state
        .with(|s| limit(&mut valid.containers, &s.settings.limits));
    crate::orchestrator::Orchestrator::check(&valid.containers).map_err(|e| problem(e.field(), e.to_string()))?;
    Ok(valid)
}

/// What the API says of a running container: its entry (secrets redacted) and its state.
fn shown(state: &AppState, spec: &ContainerSpec) -> Value {
    let states = state.states.read().expect("container states poisoned");
    json!({"entry": spec.raw, "state": states.get(&spec.id)})
}

/// Keeps the containers the node runs now and serves jobs on them.
fn commit(state: &AppState) -> Result<(), Refusal> {
    let specs = state.manager.specs();
    state
        .admin
        .state
        .update(|s| s.containers = Some(specs.iter().map(kept_entry).collect()))
        .map_err(Refusal::State)?;
    state.serve(&specs).map_err(|e| Refusal::Internal(e.to_string()))
}

/// `GET /admin/containers`: what the node runs, each entry with its state, and where the list
/// comes from (`config.json` until the operator changes it).
pub(super) async fn list(State(state): State<Arc<AppState>>, _signed: Signed) -> Json<Value> {
    let containers: Vec<Value> = state.manager.specs().iter().map(|s| shown(&state, s)).collect();
    let from = match state.admin.state.with(|s| s.containers.is_some()) {
        true => "admin",
        false => "config.json",
    };
    Json(json!({"containers": containers, "from": from}))
}

/// `POST /admin/containers`: checks the entry, pulls and starts the container, waits until it
/// answers, then serves it (201).
pub(super) async fn add(
    State(state): State<Arc<AppState>>,
    signed: Signed,
) -> Result<(StatusCode, Json<Value>), Refusal> {
    let entry = entry_of(&signed.body)?;
    let _one_at_a_time = state.admin.changes.lock().await;
    let mut entries: Vec<ContainerConfig> = state.manager.specs().into_iter().map(|s| s.raw).collect();
    if entries.iter().any(|c| c.id == entry.id) {
        return Err(Refusal::Conflict(format!(
            "a container {:?} already runs here; replace it with PUT /admin/containers/{}",
            entry.id, entry.id
        )));
    }
    if entries.len() >= MAX_CONTAINERS {
        return Err(Refusal::Conflict(format!(
            "this node runs {MAX_CONTAINERS} containers, the most it takes; remove one first"
        )));
    }
    let id = entry.id.clone();
    entries.push(entry);
    let index = entries.len() - 1;
    let valid = checked(&state, entries, index)?;
    let spec = valid.containers[index].clone();
    state.manager.deploy(spec.clone()).await.map_err(Refusal::Start)?;
    if let Err(e) = commit(&state) {
        state.manager.withdraw(&id).await;
        return Err(e);
    }
    tracing::info!(operator = %npub(&signed.operator), container = %id, "operator added a container");
    Ok((StatusCode::CREATED, Json(shown(&state, &spec))))
}

/// `PUT /admin/containers/{id}`: replaces the container `id` with the entry (same id). The old one
/// is stopped first (they may share a port); if the new one does not come up, the old one is
/// started again.
pub(super) async fn replace(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    signed: Signed,
) -> Result<Json<Value>, Refusal> {
    let entry = entry_of(&signed.body)?;
    if entry.id != id {
        return Err(problem(
            "id",
            format!(
                "{:?} is not the id in the path ({id:?}); to rename, add the new container and remove the old",
                entry.id
            ),
        ));
    }
    let _one_at_a_time = state.admin.changes.lock().await;
    let mut entries: Vec<ContainerConfig> = state.manager.specs().into_iter().map(|s| s.raw).collect();
    let index = entries
        .iter()
        .position(|c| c.id == id)
        .ok_or_else(|| Refusal::NotFound(format!("no container {id:?} runs here")))?;
    entries[index] = entry;
    let valid = checked(&state, entries, index)?;
    let spec = valid.containers[index].clone();
    let Some(old) = state.manager.withdraw(&id).await else {
        return Err(Refusal::NotFound(format!("no container {id:?} runs here")));
    };
    if let Err(e) = state.manager.deploy(spec.clone()).await {
        tracing::warn!(container = %id, error = %e, "replacement did not come up; starting the old container again");
        if let Err(again) = state.manager.deploy(old).await {
            tracing::error!(container = %id, error = %again, "the old container does not come up either");
            state
                .serve(&state.manager.specs())
                .map_err(|e| Refusal::Internal(e.to_string()))?;
        }
        return Err(Refusal::Start(e));
    }
    commit(&state)?;
    tracing::info!(operator = %npub(&signed.operator), container = %id, "operator replaced a container");
    Ok(Json(shown(&state, &spec)))
}

/// `DELETE /admin/containers/{id}`: stops serving the container, then stops and removes it.
pub(super) async fn remove(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    signed: Signed,
) -> Result<Json<Value>, Refusal> {
    let _one_at_a_time = state.admin.changes.lock().await;
    if state.manager.withdraw(&id).await.is_none() {
        return Err(Refusal::NotFound(format!("no container {id:?} runs here")));
    }
    commit(&state)?;
    tracing::info!(operator = %npub(&signed.operator), container = %id, "operator removed a container");
    Ok(Json(json!({"removed": id})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_entry_reads_back_as_the_same_container_with_its_secrets() {
        let entry = json!({"id": "a", "image": "i", "bearer": "B3ARER", "env": {"TOKEN": "S3CRET", "N": 3},
                           "url": "http://u:PASS@svc:3000/x", "timeout": 5});
        let (parsed, unknown) = parse_entries(&[entry]).unwrap();
        assert!(unknown.is_empty());
        let again = parsed[0].to_entry();
        for secret in ["B3ARER", "S3CRET", "PASS"] {
            assert!(again.to_string().contains(secret), "{again}");
        }
        let (reparsed, _) = parse_entries(std::slice::from_ref(&again)).unwrap();
        assert_eq!(reparsed[0].to_entry(), again);
    }

    #[test]
    fn problems_of_an_entry_name_its_own_fields() {
        let Refusal::Invalid(problems) = entry_of(br#"{"id": "a", "port": "x"}"#).unwrap_err() else {
            panic!("not a 400 with problems");
        };
        assert_eq!(problems.0[0].path, "port");
        let Refusal::Invalid(problems) = entry_of(br#"{"id": "a", "imgae": "x"}"#).unwrap_err() else {
            panic!("not a 400 with problems");
        };
        assert_eq!(problems.0[0].path, "imgae");
        assert!(matches!(entry_of(b"[1]"), Err(Refusal::BadRequest(_))));
    }
}
