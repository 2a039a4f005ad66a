//! Least privilege, asked of the real API server: what the operator's ServiceAccount may do
//! in a job's namespace (the rules `kubectl auth can-i --list --as=…` prints) is exactly
//! what its code uses (`sluice_operator::rbac`); a job's pods carry no API credentials; and
//! its NetworkPolicies select exactly the pods they are written for.
//!
//! What they let in is checked against their rules in `sluice_operator::build`'s tests, and
//! enforced for real in `network_policies.rs`.
//!
//! A module of the operator tests (see kafka.rs for why).

use k8s_openapi::api::authorization::v1::{SelfSubjectRulesReview, SelfSubjectRulesReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{ListParams, PostParams};
use kube::core::Selector;
use kube::{Api, Client, Config};
use sluice_crds::StreamJob;
use sluice_e2e::jobs::{remove, start_q0};
use sluice_e2e::{e2e_test, E2eError};
use std::collections::{BTreeMap, BTreeSet};

/// The chart's ServiceAccount, as `e2e/ci.sh` installs it.
const OPERATOR: &str = "system:serviceaccount:sluice-system:sluice";

/// Groups every authenticated user may use to ask about itself.
const SELF_REVIEW_GROUPS: [&str; 2] = ["authorization.k8s.io", "authentication.k8s.io"];

e2e_test!(
    the_operator_may_do_exactly_what_its_code_uses_and_a_jobs_pods_no_more_than_they_serve,
    |ns| {
        let mut config = Config::infer()
            .await
            .map_err(|e| E2eError::Config(e.to_string()))?;
        config.auth_info.impersonate = Some(OPERATOR.into());
        let operator = Client::try_from(config)?;
        let review = SelfSubjectRulesReview {
            spec: SelfSubjectRulesReviewSpec {
                namespace: Some(ns.name.clone()),
            },
            ..SelfSubjectRulesReview::default()
        };
        let answer = Api::<SelfSubjectRulesReview>::all(operator)
            .create(&PostParams::default(), &review)
            .await?;
        let status = answer.status.unwrap_or_default();
        assert!(
            !status.incomplete,
            "the API server's answer is incomplete: {:?}",
            status.evaluation_error
        );
        let mut granted = BTreeSet::new();
        for rule in &status.resource_rules {
            let groups = rule.api_groups.clone().unwrap_or_default();
            if groups
                .iter()
                .all(|g| SELF_REVIEW_GROUPS.contains(&g.as_str()))
            {
                continue;
            }
            assert!(
                rule.resource_names.is_none(),
                "a rule limited to names in a job's namespace: {rule:?}"
            );
            for group in &groups {
                for resource in rule.resources.clone().unwrap_or_default() {
                    for verb in &rule.verbs {
                        granted.insert((group.clone(), resource.clone(), verb.clone()));
                    }
                }
            }
        }
        let needed = sluice_operator::rbac::namespaced_permissions();
        let extra: Vec<_> = granted.difference(&needed).collect();
        let missing: Vec<_> = needed.difference(&granted).collect();
        assert!(
            extra.is_empty() && missing.is_empty(),
            "granted but unused: {extra:?}; used but not granted: {missing:?}"
        );

        // The pods of a running job have no service-account token to use.
        let api: Api<StreamJob> = ns.api();
        let (dir, _, _) = start_q0(&ns, &api, "q0-rbac", |_| {}).await?;
        let pods: Vec<Pod> = ns
            .api::<Pod>()
            .list(&ListParams::default().labels("sluice.dev/job=q0-rbac"))
            .await?
            .items;
        assert!(!pods.is_empty());
        for pod in &pods {
            let spec = pod.spec.clone().unwrap_or_default();
            let mounts: Vec<String> = spec
                .containers
                .iter()
                .flat_map(|c| c.volume_mounts.clone().unwrap_or_default())
                .map(|m| m.mount_path)
                .collect();
            assert!(
                spec.automount_service_account_token == Some(false)
                    && !mounts.iter().any(|m| m.contains("serviceaccount")),
                "pod {:?} can reach the API: {mounts:?}",
                pod.metadata.name
            );
        }

        // Its NetworkPolicies, owned by the job, each selecting the pods it is written for,
        // as the API server reads their selectors.
        let job_uid = api.get("q0-rbac").await?.metadata.uid;
        let policies = ns
            .api::<NetworkPolicy>()
            .list(&ListParams::default().labels("sluice.dev/job=q0-rbac"))
            .await?
            .items;
        let role_of = |pod: &Pod| {
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            labels.get("sluice.dev/role").cloned().unwrap_or_default()
        };
        let mut selected = BTreeMap::new();
        for policy in &policies {
            let name = policy.metadata.name.clone().unwrap_or_default();
            let owner = policy.metadata.owner_references.clone().unwrap_or_default();
            assert!(
                owner.iter().any(|o| Some(&o.uid) == job_uid.as_ref()),
                "{name} is not owned by the job"
            );
            let spec = policy.spec.clone().unwrap_or_default();
            let selector = Selector::try_from(spec.pod_selector.unwrap_or_default())
                .map_err(|e| E2eError::Config(format!("{name}'s pod selector: {e}")))?;
            let roles: BTreeSet<String> = ns
                .api::<Pod>()
                .list(&ListParams::default().labels_from(&selector))
                .await?
                .items
                .iter()
                .map(role_of)
                .collect();
            selected.insert(name, roles);
        }
        let roles = |r: &[&str]| r.iter().map(|r| r.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(
            selected,
            BTreeMap::from([
                ("q0-rbac".to_string(), roles(&["coordinator", "worker"])),
                ("q0-rbac-coordinator".to_string(), roles(&["coordinator"])),
                ("q0-rbac-worker".to_string(), roles(&["worker"])),
            ])
        );
        remove(&dir);
        Ok(())
    }
);
