//! Metric families computed at scrape time, for `prometheus::core::Collector`s that read
//! their values from elsewhere (a job's status, a map of jobs) instead of keeping counters.
//! A [`Spec`] is one family's name, help, type and label names: the collector describes
//! itself with the specs and fills [`Family`]s from them, so the two cannot disagree.

use prometheus::core::Desc;
use prometheus::proto::{self, LabelPair, Metric, MetricFamily};

pub use prometheus::proto::MetricType;

/// One metric family as a collector declares it.
pub struct Spec {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricType,
    /// Label names, in the order samples carry them.
    pub labels: &'static [&'static str],
}

impl Spec {
    /// The registry's descriptor of this family.
    pub fn desc(&self) -> prometheus::Result<Desc> {
        Desc::new(
            self.name.to_string(),
            self.help.to_string(),
            self.labels.iter().map(|l| l.to_string()).collect(),
            Default::default(),
        )
    }

    /// An empty family to add samples to.
    pub fn family(&self) -> Family {
        let mut family = MetricFamily::default();
        family.set_name(self.name.to_string());
        family.set_help(self.help.to_string());
        family.set_field_type(self.kind);
        Family {
            family,
            labels: self.labels,
        }
    }
}

/// Samples of one family being collected. Label values are given in the order of the
/// spec's label names; the text encoder escapes them.
pub struct Family {
    family: MetricFamily,
    labels: &'static [&'static str],
}

impl Family {
    /// A counter or gauge sample.
    pub fn sample(&mut self, labels: &[&str], value: f64) -> &mut Self {
        let mut metric = self.metric(labels);
        match self.family.get_field_type() {
            MetricType::COUNTER => {
                let mut c = proto::Counter::default();
                c.set_value(value);
                metric.set_counter(c);
            }
            _ => {
                let mut g = proto::Gauge::default();
                g.set_value(value);
                metric.set_gauge(g);
            }
        }
        self.family.mut_metric().push(metric);
        self
    }

    /// A summary's count and sum (no quantiles).
    pub fn summary(&mut self, labels: &[&str], count: u64, sum: f64) -> &mut Self {
        let mut metric = self.metric(labels);
        let mut s = proto::Summary::default();
        s.set_sample_count(count);
        s.set_sample_sum(sum);
        metric.set_summary(s);
        self.family.mut_metric().push(metric);
        self
    }

    /// A histogram: `buckets` are (upper bound, samples up to it, cumulative), ascending;
    /// the encoder adds the `+Inf` bucket from `count`.
    pub fn histogram(
        &mut self,
        labels: &[&str],
        buckets: impl IntoIterator<Item = (f64, u64)>,
        count: u64,
        sum: f64,
    ) -> &mut Self {
        let mut metric = self.metric(labels);
        let mut h = proto::Histogram::default();
        h.set_sample_count(count);
        h.set_sample_sum(sum);
        h.set_bucket(
            buckets
                .into_iter()
                .map(|(upper_bound, cumulative_count)| {
                    let mut b = proto::Bucket::default();
                    b.set_upper_bound(upper_bound);
                    b.set_cumulative_count(cumulative_count);
                    b
                })
                .collect(),
        );
        metric.set_histogram(h);
        self.family.mut_metric().push(metric);
        self
    }

    fn metric(&self, values: &[&str]) -> Metric {
        debug_assert_eq!(self.labels.len(), values.len(), "{}", self.family.name());
        Metric::from_label(
            self.labels
                .iter()
                .zip(values)
                .map(|(name, value)| {
                    let mut pair = LabelPair::default();
                    pair.set_name(name.to_string());
                    pair.set_value(value.to_string());
                    pair
                })
                .collect(),
        )
    }

    pub fn into_inner(self) -> MetricFamily {
        self.family
    }
}
