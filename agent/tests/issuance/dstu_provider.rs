//! A qualified provider that signs with DSTU 4145, built here for tests: its CA certificate,
//! certificates it issues, CRLs and OCSP responses, all signed with DSTU 4145 over the
//! GOST 34.311 hash (the standard's first DKE), as Ukrainian providers sign them.
//!
//! Signing is `dstu-core`'s (curve M163, the standard's polynomial-basis named curve 0);
//! hashing is `structured-dstu4145`'s GOST 34.311; DER is written with `yasna`. custody
//! verifies with `structured-dstu4145` alone, so every signature a test accepts was made by
//! one implementation and checked by another. Keys are derived from a seed: test material,
//! never a provider's.

use dstu_core::hazmat::dstu4145::curve163::Point;
use dstu_core::hazmat::dstu4145::gf2m163::FieldElement;
use dstu_core::hazmat::dstu4145::scalar::Scalar;
use dstu_core::hazmat::dstu4145::signature;
use sha2::{Digest, Sha256};
use structured_dstu4145::gost::{Dke, Gost34311, DEFAULT_DKE};
use yasna::models::{GeneralizedTime, ObjectIdentifier, UTCTime};
use yasna::{DERWriter, Tag};

/// DSTU 4145 with GOST 34.311, little-endian encodings.
const DSTU_LE: &[u64] = &[1, 2, 804, 2, 1, 1, 1, 1, 3, 1, 1];
/// The standard's named curve 0: M163, polynomial basis.
const CURVE_M163: &[u64] = &[1, 2, 804, 2, 1, 1, 1, 1, 3, 1, 1, 2, 0];

fn oid(arcs: &[u64]) -> ObjectIdentifier {
    ObjectIdentifier::from_slice(arcs)
}

/// A DSTU 4145 key pair on M163.
#[derive(Clone)]
pub(crate) struct DstuKey {
    d: [u8; 21],
    /// The compressed public point, little-endian (as the LE OID encodes it).
    public: [u8; 21],
}

/// The base point of M163 as the standard names it (DSTU 4145-2002 table of named curves, as
/// `structured-dstu4145` and Bouncy Castle carry it); dstu-core's own generator is another
/// point of the same curve, so signing takes this one.
fn base_point() -> Point {
    let hex = |s: &str| -> [u8; 21] {
        let mut out = [0u8; 21];
        let s = format!("{s:0>42}");
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or_else(|e| panic!("{e}"));
        }
        out
    };
    let g = Point::Affine(
        FieldElement::from_be_bytes(&hex("2E2F85F5DD74CE983A5C4237229DAF8A3F35823BE")),
        FieldElement::from_be_bytes(&hex("3826F008A8C51D7B95284D9D03FF0E00CE2CD723A")),
    );
    assert!(
        g.is_on_curve(),
        "the standard's base point is on dstu-core's M163"
    );
    g
}

fn trace(z: FieldElement) -> bool {
    let mut acc = z;
    let mut t = z;
    for _ in 1..163 {
        t = t.square();
        acc = acc + t;
    }
    acc == FieldElement::ONE
}

/// A scalar below the curve order (2^162 < n) from 32 bytes.
fn scalar_bytes(seed: &[u8]) -> [u8; 21] {
    let h = Sha256::digest(seed);
    let mut out = [0u8; 21];
    out[0] = h[0] & 0x03;
    out[1..].copy_from_slice(&h[1..21]);
    if out.iter().all(|b| *b == 0) {
        out[20] = 1;
    }
    out
}

impl DstuKey {
    /// The key pair derived from `seed`.
    pub(crate) fn from_seed(seed: &str) -> Self {
        let d = scalar_bytes(format!("dstu test key {seed}").as_bytes());
        // Q = -dG, as DSTU 4145 defines the public key.
        let Point::Affine(x, y) = base_point().scalar_multiply(&d).negate() else {
            panic!("the public point is at infinity");
        };
        // DSTU 4145 §6.9 point compression: x with its lowest bit replaced by Tr(y/x).
        let mut be = x.to_be_bytes();
        be[20] = (be[20] & !1) | u8::from(trace(y.multiply(x.invert())));
        let mut public = be;
        public.reverse();
        Self { d, public }
    }

    /// SubjectPublicKeyInfo: DSTU 4145 (LE), curve M163 with the DKE, the compressed point.
    fn write_spki(&self, w: DERWriter<'_>) {
        w.write_sequence(|w| {
            w.next().write_sequence(|w| {
                w.next().write_oid(&oid(DSTU_LE));
                w.next().write_sequence(|w| {
                    w.next().write_oid(&oid(CURVE_M163));
                    w.next().write_bytes(&DEFAULT_DKE);
                });
            });
            let point = yasna::construct_der(|w| w.write_bytes(&self.public));
            w.next().write_bitvec_bytes(&point, point.len() * 8);
        });
    }

    /// The content of the subjectPublicKey BIT STRING (what an OCSP key hash covers).
    pub(crate) fn public_key_bits(&self) -> Vec<u8> {
        yasna::construct_der(|w| w.write_bytes(&self.public))
    }

    /// The DSTU 4145 signature of `tbs` as certificates, CRLs and OCSP responses carry it: an
    /// OCTET STRING of r then s, little-endian, 21 bytes each.
    pub(crate) fn sign(&self, tbs: &[u8]) -> Vec<u8> {
        let dke = Dke::new(&DEFAULT_DKE).unwrap_or_else(|e| panic!("{e:?}"));
        let mut hash = Gost34311::new(&dke);
        hash.update(tbs).unwrap_or_else(|e| panic!("{e:?}"));
        let digest = hash.finalize();
        // The hash is read as a little-endian number (its first byte lowest): dstu-core reads
        // big-endian, so it gets the bytes reversed.
        let mut reversed = digest;
        reversed.reverse();
        let mut nonce_seed = self.d.to_vec();
        nonce_seed.extend_from_slice(tbs);
        for attempt in 0u8.. {
            nonce_seed.push(attempt);
            let e = scalar_bytes(&nonce_seed);
            if let Some((r, s)) = signature::sign(
                &reversed,
                Scalar::from_be_bytes(&self.d),
                Scalar::from_be_bytes(&e),
                base_point(),
            ) {
                let mut octets: Vec<u8> = r.iter().rev().copied().collect();
                octets.extend(s.iter().rev());
                return yasna::construct_der(|w| w.write_bytes(&octets));
            }
        }
        unreachable!()
    }
}

fn write_name(w: DERWriter<'_>, cn: &str, org: &str) {
    w.write_sequence(|w| {
        for (arcs, value) in [(&[2u64, 5, 4, 10][..], org), (&[2, 5, 4, 3][..], cn)] {
            w.next().write_set(|w| {
                w.next().write_sequence(|w| {
                    w.next().write_oid(&oid(arcs));
                    w.next().write_utf8_string(value);
                });
            });
        }
    });
}

fn write_dstu_algorithm(w: DERWriter<'_>) {
    w.write_sequence(|w| w.next().write_oid(&oid(DSTU_LE)));
}

/// `SEQUENCE { tbs, algorithm, BIT STRING signature }`, the shape of certificates, CRLs and
/// basic OCSP responses; `signed_tbs` is what the signature covers (normally `tbs`).
fn signed_envelope(
    tbs: &[u8],
    signed_tbs: &[u8],
    key: &DstuKey,
    extra: impl FnOnce(&mut yasna::DERWriterSeq<'_>),
) -> Vec<u8> {
    let signature = key.sign(signed_tbs);
    yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_der(tbs);
            write_dstu_algorithm(w.next());
            w.next().write_bitvec_bytes(&signature, signature.len() * 8);
            extra(w);
        })
    })
}

fn write_extension(w: DERWriter<'_>, arcs: &[u64], critical: bool, value: &[u8]) {
    w.write_sequence(|w| {
        w.next().write_oid(&oid(arcs));
        if critical {
            w.next().write_bool(true);
        }
        w.next().write_bytes(value);
    });
}

/// Now, in whole seconds (DER times carry no fraction here).
fn now() -> time::OffsetDateTime {
    let t = time::OffsetDateTime::now_utc();
    t - time::Duration::nanoseconds(i64::from(t.nanosecond()))
}

fn utc(t: time::OffsetDateTime) -> UTCTime {
    UTCTime::from_datetime(t)
}

fn generalized(t: time::OffsetDateTime) -> GeneralizedTime {
    GeneralizedTime::from_datetime(t)
}

/// What a certificate says beyond its names and key.
#[derive(Default)]
pub(crate) struct Profile {
    /// A CA certificate (basicConstraints cA, keyCertSign and cRLSign).
    pub(crate) ca: bool,
    /// Extended key usage id-kp-OCSPSigning: a delegated OCSP responder.
    pub(crate) ocsp_signing: bool,
    /// CRL distribution point.
    pub(crate) crl_url: Option<String>,
    /// OCSP responder (Authority Information Access).
    pub(crate) ocsp_url: Option<String>,
}

/// One party of the test PKI: a name and a DSTU key.
#[derive(Clone)]
pub(crate) struct Party {
    pub(crate) cn: String,
    pub(crate) org: String,
    pub(crate) key: DstuKey,
}

impl Party {
    /// A party named `cn` (organisation "Test DSTU QTSP") with the key of `seed`.
    pub(crate) fn new(cn: &str, seed: &str) -> Self {
        Self {
            cn: cn.into(),
            org: "Test DSTU QTSP".into(),
            key: DstuKey::from_seed(seed),
        }
    }

    /// The DER name.
    pub(crate) fn name(&self) -> Vec<u8> {
        yasna::construct_der(|w| write_name(w, &self.cn, &self.org))
    }

    /// A certificate for `subject`, serial `serial`, signed by this party with DSTU 4145.
    pub(crate) fn issue(&self, subject: &Self, serial: u64, profile: &Profile) -> Vec<u8> {
        let now = now();
        let tbs = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_tagged(Tag::context(0), |w| w.write_u8(2));
                w.next().write_u64(serial);
                write_dstu_algorithm(w.next());
                write_name(w.next(), &self.cn, &self.org);
                w.next().write_sequence(|w| {
                    w.next().write_utctime(&utc(now - time::Duration::days(1)));
                    w.next()
                        .write_utctime(&utc(now + time::Duration::days(365)));
                });
                write_name(w.next(), &subject.cn, &subject.org);
                subject.key.write_spki(w.next());
                w.next().write_tagged(Tag::context(3), |w| {
                    w.write_sequence(|w| {
                        let basic = yasna::construct_der(|w| {
                            w.write_sequence(|w| {
                                if profile.ca {
                                    w.next().write_bool(true);
                                }
                            })
                        });
                        write_extension(w.next(), &[2, 5, 29, 19], true, &basic);
                        // keyUsage: keyCertSign + cRLSign (CA), else digitalSignature +
                        // nonRepudiation.
                        let usage = if profile.ca {
                            vec![0x03, 0x02, 0x01, 0x06]
                        } else {
                            vec![0x03, 0x02, 0x06, 0xc0]
                        };
                        write_extension(w.next(), &[2, 5, 29, 15], true, &usage);
                        if profile.ocsp_signing {
                            let eku = yasna::construct_der(|w| {
                                w.write_sequence(|w| {
                                    w.next().write_oid(&oid(&[1, 3, 6, 1, 5, 5, 7, 3, 9]))
                                })
                            });
                            write_extension(w.next(), &[2, 5, 29, 37], false, &eku);
                        }
                        if let Some(url) = &profile.crl_url {
                            let dp = yasna::construct_der(|w| {
                                w.write_sequence(|w| {
                                    w.next().write_sequence(|w| {
                                        w.next().write_tagged(Tag::context(0), |w| {
                                            w.write_tagged_implicit(Tag::context(0), |w| {
                                                w.write_sequence(|w| {
                                                    w.next().write_tagged_implicit(
                                                        Tag::context(6),
                                                        |w| w.write_ia5_string(url),
                                                    )
                                                })
                                            })
                                        })
                                    })
                                })
                            });
                            write_extension(w.next(), &[2, 5, 29, 31], false, &dp);
                        }
                        if let Some(url) = &profile.ocsp_url {
                            let aia = yasna::construct_der(|w| {
                                w.write_sequence(|w| {
                                    w.next().write_sequence(|w| {
                                        w.next().write_oid(&oid(&[1, 3, 6, 1, 5, 5, 7, 48, 1]));
                                        w.next().write_tagged_implicit(Tag::context(6), |w| {
                                            w.write_ia5_string(url)
                                        });
                                    })
                                })
                            });
                            write_extension(w.next(), &[1, 3, 6, 1, 5, 5, 7, 1, 1], false, &aia);
                        }
                    })
                });
            })
        });
        signed_envelope(&tbs, &tbs, &self.key, |_| {})
    }

    /// A CRL of this party (number `number`) listing `revoked` serials (keyCompromise);
    /// `tamper` changes the to-be-signed bytes after signing.
    pub(crate) fn crl(&self, number: u64, revoked: &[u64], tamper: Tamper) -> Vec<u8> {
        let now = now();
        let tbs = |number: u64| {
            yasna::construct_der(|w| {
                w.write_sequence(|w| {
                    w.next().write_u8(1);
                    write_dstu_algorithm(w.next());
                    write_name(w.next(), &self.cn, &self.org);
                    w.next().write_utctime(&utc(now - time::Duration::hours(1)));
                    w.next().write_utctime(&utc(now + time::Duration::days(1)));
                    if !revoked.is_empty() {
                        w.next().write_sequence(|w| {
                            for serial in revoked {
                                w.next().write_sequence(|w| {
                                    w.next().write_u64(*serial);
                                    w.next().write_utctime(&utc(now - time::Duration::hours(2)));
                                    w.next().write_sequence(|w| {
                                        // reasonCode keyCompromise (1)
                                        write_extension(
                                            w.next(),
                                            &[2, 5, 29, 21],
                                            false,
                                            &[0x0a, 0x01, 0x01],
                                        );
                                    });
                                });
                            }
                        });
                    }
                    w.next().write_tagged(Tag::context(0), |w| {
                        w.write_sequence(|w| {
                            let n = yasna::construct_der(|w| w.write_u64(number));
                            write_extension(w.next(), &[2, 5, 29, 20], false, &n);
                        })
                    });
                })
            })
        };
        let signed = tbs(number);
        let sent = if tamper == Tamper::Tbs {
            tbs(number + 1)
        } else {
            signed.clone()
        };
        let mut der = signed_envelope(&sent, &signed, &self.key, |_| {});
        if tamper == Tamper::Signature {
            flip_signature_byte(&mut der);
        }
        der
    }

    /// An OCSP response signed by this party for certificate `serial` issued by `issuer`:
    /// revoked (keyCompromise) or good, with `certs` sent along (a delegated responder's).
    pub(crate) fn ocsp(
        &self,
        issuer: &Self,
        serial: u64,
        revoked: bool,
        certs: &[Vec<u8>],
        tamper: Tamper,
    ) -> Vec<u8> {
        let now = now();
        let name_hash = openssl::sha::sha1(&issuer.name());
        let key_hash = openssl::sha::sha1(&issuer.key.public_key_bits());
        let tbs = |serial: u64| {
            yasna::construct_der(|w| {
                w.write_sequence(|w| {
                    w.next()
                        .write_tagged(Tag::context(1), |w| write_name(w, &self.cn, &self.org));
                    w.next().write_generalized_time(&generalized(now));
                    w.next().write_sequence(|w| {
                        w.next().write_sequence(|w| {
                            w.next().write_sequence(|w| {
                                w.next().write_sequence(|w| {
                                    w.next().write_oid(&oid(&[1, 3, 14, 3, 2, 26]));
                                    w.next().write_null();
                                });
                                w.next().write_bytes(&name_hash);
                                w.next().write_bytes(&key_hash);
                                w.next().write_u64(serial);
                            });
                            if revoked {
                                w.next().write_tagged_implicit(Tag::context(1), |w| {
                                    w.write_sequence(|w| {
                                        w.next().write_generalized_time(&generalized(
                                            now - time::Duration::hours(2),
                                        ));
                                        w.next().write_tagged(Tag::context(0), |w| w.write_enum(1));
                                    })
                                });
                            } else {
                                w.next()
                                    .write_tagged_implicit(Tag::context(0), |w| w.write_null());
                            }
                            w.next().write_generalized_time(&generalized(
                                now - time::Duration::minutes(1),
                            ));
                            w.next().write_tagged(Tag::context(0), |w| {
                                w.write_generalized_time(&generalized(
                                    now + time::Duration::hours(1),
                                ))
                            });
                        });
                    });
                })
            })
        };
        let signed = tbs(serial);
        let sent = if tamper == Tamper::Tbs {
            // The same answer about another certificate: only the serial differs.
            tbs(serial + 1)
        } else {
            signed.clone()
        };
        let mut basic = signed_envelope(&sent, &signed, &self.key, |w| {
            if !certs.is_empty() {
                w.next().write_tagged(Tag::context(0), |w| {
                    w.write_sequence(|w| {
                        for c in certs {
                            w.next().write_der(c);
                        }
                    })
                });
            }
        });
        if tamper == Tamper::Signature {
            flip_signature_byte(&mut basic);
        }
        yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_enum(0);
                w.next().write_tagged(Tag::context(0), |w| {
                    w.write_sequence(|w| {
                        w.next().write_oid(&oid(&[1, 3, 6, 1, 5, 5, 7, 48, 1, 1]));
                        w.next().write_bytes(&basic);
                    })
                });
            })
        })
    }
}

/// How a signed document is spoiled after signing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tamper {
    /// Not at all.
    None,
    /// A byte of the signature flipped.
    Signature,
    /// The to-be-signed part changed after signing.
    Tbs,
}

/// Flips a byte of the signature of a signed envelope: the first BIT STRING holding a 42-byte
/// OCTET STRING (`03 2d 00 04 2a`) follows the to-be-signed part; a byte of r flips.
fn flip_signature_byte(der: &mut [u8]) {
    let at = der
        .windows(4)
        .position(|w| w == [0x03, 0x2d, 0x00, 0x04])
        .unwrap_or_else(|| panic!("no DSTU signature found"));
    der[at + 6] ^= 0x01;
}
