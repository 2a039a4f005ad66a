//! The Sluice operator: reconciles `StreamJob` resources into coordinator and worker pods and
//! drives each job's lifecycle through the coordinator's control API. See DESIGN.md; the
//! reconcile pipeline lands with the operator issue.
