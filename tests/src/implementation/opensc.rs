//! OpenSC's PKCS#11 module over a private pcscd, with virtual PKCS#15 cards in vsmartcard's
//! reader ([`crate::pcsc::Reader`]): carriers are inserted and removed as cards are, and the
//! module has real slot events. The reader has two slots, so at most two cards at a time.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use sha2::{Digest as _, Sha256};

use super::{package_version, Capabilities, Carrier, Implementation, Instance, Support};
use crate::manifest::{ObjectClass, ObjectManifest, TokenManifest};
use crate::pcsc::Reader;
use crate::pkcs15::{CardSpec, Pkcs15Card};
use crate::smartcard::VirtualCard;

/// How long pcscd may take to notice a card (it polls a vpcd reader every 400 ms).
const NOTICE: Duration = Duration::from_secs(10);

/// OpenSC over pcscd with virtual cards.
pub(crate) struct OpenSc;

impl Implementation for OpenSc {
    fn name(&self) -> &'static str {
        "opensc"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            sign: Support::Missing("C_Sign: the virtual card refuses every cryptographic command"),
            wipe_reinit: Support::Missing(
                "C_InitToken: OpenSC cannot personalise the card (no pkcs15-init profile)",
            ),
            wipe_destroy_keys: Support::Missing(
                "C_Login / C_DestroyObject: the card has no user PIN and is read-only",
            ),
            insert_remove: Support::Yes,
            reinit_by_tool: Support::Missing(
                "re-initialisation by another tool: the card is read-only",
            ),
            new_serial_on_reinit: false,
            server: false,
        }
    }

    fn start(&self, dir: &Path) -> anyhow::Result<Box<dyn Instance>> {
        Ok(Box::new(OpenScInstance {
            reader: Reader::start(dir)?,
            dir: dir.to_path_buf(),
            slots: [None, None],
            made: 0,
        }))
    }
}

struct OpenScInstance {
    reader: Reader,
    dir: PathBuf,
    /// The card in each of the reader's two slots.
    slots: [Option<(String, VirtualCard)>; 2],
    made: usize,
}

impl Instance for OpenScInstance {
    fn module(&self) -> &Path {
        self.reader.module()
    }

    fn env(&self) -> Vec<(OsString, OsString)> {
        self.reader.env()
    }

    fn version(&self) -> String {
        format!(
            "OpenSC {} over pcscd {} with vsmartcard-vpcd {}",
            package_version("opensc"),
            package_version("pcscd"),
            package_version("vsmartcard-vpcd")
        )
    }

    fn daemon_pids(&self) -> Vec<u32> {
        vec![self.reader.pid()]
    }

    fn insert(&mut self, label: &str) -> anyhow::Result<Carrier> {
        let slot = self
            .slots
            .iter()
            .position(Option::is_none)
            .context("the virtual reader holds two cards at most")?;
        let seed = format!("{}/{}/{label}", self.dir.display(), self.made);
        let card = Pkcs15Card::generate(&CardSpec::new(label, &seed))?;
        let inserted = if slot == 0 {
            self.reader.insert(&card.image)?
        } else {
            self.reader.insert_second(&card.image)?
        };
        inserted.wait_detected(NOTICE)?;
        let serial = card.spec.serial_hex();
        self.slots[slot] = Some((serial, inserted));
        self.made += 1;
        Ok(Carrier {
            slot: slot as u64,
            token: manifest(&card, self.made - 1),
        })
    }

    fn remove(&mut self, carrier: &Carrier) -> anyhow::Result<()> {
        let Some(entry) = self.slots.iter_mut().find(|s| {
            s.as_ref()
                .is_some_and(|(serial, _)| serial == carrier.serial())
        }) else {
            bail!("no card with serial {} in the reader", carrier.serial());
        };
        if let Some((_, card)) = entry.take() {
            card.remove();
        }
        Ok(())
    }
}

/// What the card holds, as OpenSC presents it.
fn manifest(card: &Pkcs15Card, index: usize) -> TokenManifest {
    let id_hex = hex::encode(&card.spec.key_id);
    let object = |class, key_type: Option<&str>| ObjectManifest {
        class,
        source: "pkcs15_card".to_owned(),
        id_hex: id_hex.clone(),
        label_hex: None,
        label_utf8: None,
        key_type: key_type.map(str::to_owned),
        spki_sha256: Some(hex::encode(Sha256::digest(&card.public_key))),
        cert_sha256: None,
        x509: None,
        subject: None,
        cert_file: None,
        start_date: None,
    };
    let certificate = ObjectManifest {
        cert_sha256: Some(hex::encode(Sha256::digest(&card.certificate))),
        x509: Some(true),
        ..object(ObjectClass::Certificate, None)
    };
    TokenManifest {
        index,
        label: card.spec.label.clone(),
        label_hex: hex::encode(card.spec.label.as_bytes()),
        serial: card.spec.serial_hex(),
        manufacturer: card.spec.manufacturer.clone(),
        model: "PKCS#15".to_owned(),
        // The card has no PIN.
        user_pin: String::new(),
        so_pin: String::new(),
        user_pin_file: PathBuf::new(),
        so_pin_file: PathBuf::new(),
        token_dir: PathBuf::new(),
        objects: vec![
            object(ObjectClass::PrivateKey, Some("ec-p256")),
            object(ObjectClass::PublicKey, Some("ec-p256")),
            certificate,
        ],
    }
}
