//! Prints the Sluice CRDs as YAML (for `kubectl apply -f -`), or with a directory argument
//! writes one file per CRD there (how `crds/generated/` is kept up to date).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    match run(std::env::args_os().nth(1).map(PathBuf::from)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crdgen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(out_dir: Option<PathBuf>) -> Result<(), Box<dyn std::error::Error>> {
    let crds = sluice_crds::crd::all();
    match out_dir {
        Some(dir) => {
            for (file, crd) in crds {
                let path = dir.join(file);
                std::fs::write(&path, sluice_crds::crd::to_yaml(&crd)?)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
        }
        None => {
            for (i, (_, crd)) in crds.iter().enumerate() {
                if i > 0 {
                    println!("---");
                }
                print!("{}", serde_yaml::to_string(crd)?);
            }
        }
    }
    Ok(())
}
