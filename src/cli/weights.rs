//! `beamwatch weights`: import, verify, locate and download ResNet-18 weights.

use std::path::PathBuf;

use clap::Subcommand;

use crate::Error;
use crate::commands::weights;
use crate::weights::WeightsError;
use crate::weights::identity::{Identity, Provenance};

#[derive(Subcommand)]
pub enum WeightsCommand {
    /// Convert a torchvision .pth checkpoint or a safetensors file into beamwatch's weight file.
    Import {
        source: PathBuf,
        /// Destination (default: beamwatch's data directory, where every command looks).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Report what a weight file is: layout, sha256, tensor fingerprint, whether it is torchvision
    /// IMAGENET1K_V1.
    Verify {
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Exit with an error unless the file is torchvision IMAGENET1K_V1.
        #[arg(long)]
        require_imagenet: bool,
    },
    /// Download torchvision's resnet18-f37072fd.pth (needs internet), check it, import it.
    Fetch {
        #[arg(long)]
        url: Option<String>,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Where beamwatch looks for weights, in order, and what is there.
    Where,
}

impl WeightsCommand {
    pub fn run(self) -> Result<(), Error> {
        match self {
            Self::Import { source, out } => {
                let imp = weights::import(&source, out.as_deref())?;
                println!("wrote {}", imp.out.display());
                print_identity(&imp.identity);
            }
            Self::Verify { file, json, require_imagenet } => {
                let id = weights::verify(&file)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&id).unwrap_or_default());
                } else {
                    print_identity(&id);
                }
                if require_imagenet && id.provenance != Provenance::TorchvisionImagenet1kV1 {
                    return Err(weights::not_imagenet(&id));
                }
                if let Err(reason) = &id.layout {
                    return Err(WeightsError::Layout { path: file, reason: reason.clone() }.into());
                }
            }
            Self::Fetch { url, out } => {
                let imp = weights::fetch(url.as_deref(), out.as_deref())?;
                println!("wrote {}", imp.out.display());
                print_identity(&imp.identity);
            }
            Self::Where => {
                for (c, exists) in weights::locate() {
                    println!("{} {} ({})", if exists { "found  " } else { "missing" }, c.path.display(), c.origin);
                }
            }
        }
        Ok(())
    }
}

fn print_identity(id: &Identity) {
    println!("file:        {}", id.path);
    println!("sha256:      {}", id.file_sha256);
    match &id.layout {
        Ok(()) => println!("layout:      ResNet-18 trunk complete ({} tensors)", id.n_tensors),
        Err(e) => println!("layout:      NOT a usable ResNet-18: {e}"),
    }
    println!("fingerprint: {}", id.tensor_fingerprint.as_deref().unwrap_or("-"));
    println!("identity:    {}", id.provenance.label());
    println!("evidence:    {}", id.evidence);
}
