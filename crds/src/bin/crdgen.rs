//! Prints the Sluice CRDs as YAML (for `kubectl apply -f -`), or with directory arguments
//! writes one file per CRD into each (how `crds/generated/` and the chart's copies are kept
//! up to date).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    match run(std::env::args_os().skip(1).map(PathBuf::from).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crdgen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(out_dirs: Vec<PathBuf>) -> Result<(), Box<dyn std::error::Error>> {
    let crds = sluice_crds::crd::all();
    if out_dirs.is_empty() {
        for (i, (_, crd)) in crds.iter().enumerate() {
            if i > 0 {
                println!("---");
            }
            print!("{}", serde_yaml::to_string(crd)?);
        }
    }
    for dir in out_dirs {
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for (file, crd) in &crds {
            let path = dir.join(file);
            std::fs::write(&path, sluice_crds::crd::to_yaml(crd)?)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}
