//! The access the operator needs in every namespace it watches: exactly what its calls use,
//! and what the chart's Role or ClusterRole grants (`charts/sluice/templates/_helpers.tpl`,
//! `sluice.watchRules`). An end-to-end test asks the API server what the operator's
//! ServiceAccount may do and compares it with this list, so a verb added to the code without
//! the chart fails there, and a verb left in the chart after the code stopped using it too.
//!
//! The leader-election Lease in the operator's own namespace is granted separately.

/// Verbs on resources of one API group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// The API group; "" is the core group.
    pub group: &'static str,
    pub resources: &'static [&'static str],
    pub verbs: &'static [&'static str],
}

/// What each call needs. Server-side apply is authorised as `patch`, and as `create` too
/// when the object does not exist yet.
pub const NAMESPACED: &[Access] = &[
    // Reconciled (watched), finalizer added by a merge patch, status patched.
    Access {
        group: "sluice.dev",
        resources: &["streamjobs"],
        verbs: &["list", "watch", "patch"],
    },
    Access {
        group: "sluice.dev",
        resources: &["streamjobs/status", "streamquotas/status"],
        verbs: &["patch"],
    },
    // Children carry owner references that block the owner's deletion, which the API server
    // allows only to who may update the owner's finalizers.
    Access {
        group: "sluice.dev",
        resources: &["streamjobs/finalizers"],
        verbs: &["update"],
    },
    // Admission reads the namespace's quotas when a job asks to run.
    Access {
        group: "sluice.dev",
        resources: &["streamquotas"],
        verbs: &["list"],
    },
    // Owned (watched) and applied; the coordinator's Deployment is read to tell a first start.
    Access {
        group: "apps",
        resources: &["deployments"],
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
    },
    Access {
        group: "apps",
        resources: &["statefulsets"],
        verbs: &["list", "watch", "create", "patch", "delete"],
    },
    // The coordinator's Service is read for its address.
    Access {
        group: "",
        resources: &["services"],
        verbs: &["get", "create", "patch"],
    },
    // The job's manifest and the pre-flight's.
    Access {
        group: "",
        resources: &["configmaps"],
        verbs: &["create", "patch", "delete"],
    },
    // The control token (the one the job names, or the one the operator generates) and the
    // job's certificates, which the operator issues. Never listed or watched: the operator
    // reads only the Secrets it is pointed at or made.
    Access {
        group: "",
        resources: &["secrets"],
        verbs: &["get", "create"],
    },
    Access {
        group: "policy",
        resources: &["poddisruptionbudgets"],
        verbs: &["create", "patch"],
    },
    Access {
        group: "networking.k8s.io",
        resources: &["networkpolicies"],
        verbs: &["create", "patch"],
    },
    // Pods are read for health and a failed tool's last log lines; never created or deleted.
    Access {
        group: "",
        resources: &["pods"],
        verbs: &["list"],
    },
    Access {
        group: "",
        resources: &["pods/log"],
        verbs: &["get"],
    },
    // The pre-flight and savepoint-cleanup Jobs: owned (watched), read, created, deleted.
    Access {
        group: "batch",
        resources: &["jobs"],
        verbs: &["get", "list", "watch", "create", "delete"],
    },
    Access {
        group: "events.k8s.io",
        resources: &["events"],
        verbs: &["create", "patch"],
    },
    // Read too: a pod the namespace refuses to create is told only in its controller's
    // `FailedCreate` events (`refusals`).
    Access {
        group: "",
        resources: &["events"],
        verbs: &["list", "create", "patch"],
    },
];

/// Every `(group, resource, verb)` of [`NAMESPACED`].
pub fn namespaced_permissions() -> std::collections::BTreeSet<(String, String, String)> {
    NAMESPACED
        .iter()
        .flat_map(|a| {
            a.resources.iter().flat_map(move |r| {
                a.verbs
                    .iter()
                    .map(move |v| (a.group.to_string(), r.to_string(), v.to_string()))
            })
        })
        .collect()
}
