//! Least privilege, asked of the real API server: what the operator's ServiceAccount may do
//! in a job's namespace (the rules `kubectl auth can-i --list --as=…` prints) is exactly
//! what its code uses (`sluice_operator::rbac`), and a job's pods carry no API credentials.
//!
//! A module of the operator tests (see kafka.rs for why).

use k8s_openapi::api::authorization::v1::{SelfSubjectRulesReview, SelfSubjectRulesReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, Config};
use sluice_crds::StreamJob;
use sluice_e2e::jobs::{remove, start_q0};
use sluice_e2e::{e2e_test, E2eError};
use std::collections::BTreeSet;

/// The chart's ServiceAccount, as `e2e/ci.sh` installs it.
const OPERATOR: &str = "system:serviceaccount:sluice-system:sluice";

/// Groups every authenticated user may use to ask about itself.
const SELF_REVIEW_GROUPS: [&str; 2] = ["authorization.k8s.io", "authentication.k8s.io"];

e2e_test!(
    the_operator_may_do_in_a_jobs_namespace_exactly_what_its_code_uses,
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
        remove(&dir);
        Ok(())
    }
);
