//! What every benchmark reports the same way: figures of several runs summed up as the median and
//! the range, targets judged on the medians, and the checks that make a run fail when Skiff (or the
//! reference) failed calls or did not do the work it reports.

use std::collections::BTreeMap;

/// The share of failed calls a run tolerates before it fails (stated in bench/README.md).
pub const MAX_FAILED_SHARE: f64 = 0.005;

/// One figure of one run.
#[derive(Debug, Clone)]
pub struct Figure {
    /// What it is, with its unit: `skiff writes/s at 256 clients`, `ratio p99 ...`.
    pub name: String,
    pub value: f64,
}

/// The figures of one run, in the order they are printed.
#[derive(Debug, Default, Clone)]
pub struct Figures(pub Vec<Figure>);

impl Figures {
    pub fn add(&mut self, name: impl Into<String>, value: f64) {
        self.0.push(Figure { name: name.into(), value });
    }
}

/// Each figure over the runs, by name: its median and its largest value.
#[derive(Debug, Default)]
pub struct Summary {
    pub median: BTreeMap<String, f64>,
    pub max: BTreeMap<String, f64>,
}

impl Summary {
    pub fn median(&self, name: &str) -> Option<f64> {
        self.median.get(name).copied()
    }

    pub fn max(&self, name: &str) -> Option<f64> {
        self.max.get(name).copied()
    }
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Prints every figure as `median [min - max]` with each run's value, and returns the summary.
pub fn summarize(runs: &[Figures]) -> Summary {
    let mut order: Vec<String> = Vec::new();
    let mut values: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for run in runs {
        for f in &run.0 {
            if !values.contains_key(&f.name) {
                order.push(f.name.clone());
            }
            values.entry(f.name.clone()).or_default().push(f.value);
        }
    }
    println!();
    println!("## summary of {} run(s): median [min - max], then every run", runs.len());
    println!();
    println!("| figure | median | range | runs |");
    println!("|---|---:|---:|---|");
    let mut summary = Summary::default();
    for name in order {
        let v = &values[&name];
        let m = median(v);
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let each: Vec<String> = v.iter().map(|x| fmt(*x)).collect();
        println!("| {name} | {} | {} - {} | {} |", fmt(m), fmt(min), fmt(max), each.join(", "));
        summary.median.insert(name.clone(), m);
        summary.max.insert(name, max);
    }
    summary
}

/// Numbers as people read them: no decimals for large ones, three significant-ish for small ones.
pub fn fmt(x: f64) -> String {
    if !x.is_finite() {
        "-".into()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// A target judged on the medians.
pub struct Target {
    pub what: String,
    pub met: bool,
}

/// Prints the targets; they are reported, not enforced (a target missed is a figure, not a failure).
pub fn print_targets(targets: &[Target]) {
    println!();
    for t in targets {
        println!("target (on the medians): {}: {}", t.what, if t.met { "met" } else { "NOT met" });
    }
}

/// Fails when `failed` of `total` calls exceed [`MAX_FAILED_SHARE`], or when nothing succeeded.
pub fn check_failures(who: &str, what: &str, failed: u64, total: u64) -> anyhow::Result<()> {
    let succeeded = total.saturating_sub(failed);
    if succeeded == 0 {
        anyhow::bail!("{who}: no {what} succeeded ({failed} failed): the run measured nothing");
    }
    let share = failed as f64 / total as f64;
    if share > MAX_FAILED_SHARE {
        anyhow::bail!(
            "{who}: {failed} of {total} {what} failed ({:.2}%, more than the {:.1}% a run tolerates)",
            share * 100.0,
            MAX_FAILED_SHARE * 100.0
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn failures_beyond_the_share_or_no_success_fail_the_run() {
        assert!(check_failures("skiff", "writes", 0, 1000).is_ok());
        assert!(check_failures("skiff", "writes", 5, 1000).is_ok());
        assert!(check_failures("skiff", "writes", 6, 1000).is_err());
        assert!(check_failures("skiff", "writes", 10, 10).is_err());
        assert!(check_failures("skiff", "writes", 0, 0).is_err());
    }
}
