//! A snapshot as `kite targets` prints it.

use super::Snapshot;

impl Snapshot {
    /// The targets and the skipped tasks as aligned text columns.
    pub fn table(&self) -> String {
        let mut rows = vec![[
            "PORT", "ADDRESS", "TASK", "TASKDEF", "MODE", "HEALTH", "ZONE",
        ]
        .map(String::from)];
        for t in &self.targets {
            rows.push([
                t.listen_port.to_string(),
                t.address.to_string(),
                t.task_id.clone(),
                t.task_definition.clone(),
                t.network_mode.to_string(),
                t.health.clone(),
                t.zone.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        let widths: Vec<usize> = (0..7)
            .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for r in &rows {
            let line: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        if self.targets.is_empty() {
            out.push_str("(no targets)\n");
        }
        if !self.skipped.is_empty() {
            out.push_str("\nSKIPPED\n");
            for k in &self.skipped {
                out.push_str(&format!("{}  {}\n", k.task_arn, k.reason));
            }
        }
        out
    }
}
