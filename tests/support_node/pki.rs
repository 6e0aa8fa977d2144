//! Test certificates made with the `openssl` command: a CA, a server certificate for `localhost` and
//! `127.0.0.1`, a client certificate (CN `coney-client`), and a second, untrusted CA with a client
//! certificate of its own. ECDSA P-256 keys: quick to make.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// The common name of the client certificate, which SASL EXTERNAL turns into the user name.
pub const CLIENT_CN: &str = "coney-client";

/// Where the files of [`generate`] are.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The trusted CA's certificate.
    pub ca: PathBuf,
    /// Server certificate (signed by `ca`), SAN `localhost` and `127.0.0.1`.
    pub server_cert: PathBuf,
    /// Its key.
    pub server_key: PathBuf,
    /// Client certificate (signed by `ca`), CN [`CLIENT_CN`].
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
    /// A CA nobody trusts.
    pub other_ca: PathBuf,
    /// A client certificate signed by `other_ca`, CN [`CLIENT_CN`].
    pub other_client_cert: PathBuf,
    /// Its key.
    pub other_client_key: PathBuf,
}

impl Pki {
    /// The file names [`generate`] writes under `dir`.
    pub fn at(dir: &Path) -> Pki {
        let dir = dir.join("pki");
        Pki {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            other_ca: dir.join("other-ca.pem"),
            other_client_cert: dir.join("other-client.pem"),
            other_client_key: dir.join("other-client.key"),
        }
    }
}

/// Makes the certificates under `dir/pki`. Panics if `openssl` is missing or fails.
pub fn generate(dir: &Path) -> Pki {
    let pki = Pki::at(dir);
    let out = dir.join("pki");
    std::fs::create_dir_all(&out).expect("creating the pki directory");
    let file = |name: &str| out.join(name).display().to_string();

    self_signed_ca(&file("ca.key"), &pki.ca, "coney test CA");
    self_signed_ca(&file("other-ca.key"), &pki.other_ca, "coney untrusted CA");
    sign(
        &file("ca.key"),
        &pki.ca,
        &pki.server_key,
        &pki.server_cert,
        "localhost",
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    );
    let client_ext = "extendedKeyUsage=clientAuth\n";
    sign(
        &file("ca.key"),
        &pki.ca,
        &pki.client_key,
        &pki.client_cert,
        CLIENT_CN,
        client_ext,
    );
    sign(
        &file("other-ca.key"),
        &pki.other_ca,
        &pki.other_client_key,
        &pki.other_client_cert,
        CLIENT_CN,
        client_ext,
    );
    pki
}

fn self_signed_ca(key: &str, cert: &Path, cn: &str) {
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        key,
        "-out",
        &cert.display().to_string(),
        "-days",
        "3",
        "-subj",
        &format!("/CN={cn}"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
}

fn sign(ca_key: &str, ca: &Path, key: &Path, cert: &Path, cn: &str, extensions: &str) {
    let csr = format!("{}.csr", cert.display());
    let ext = format!("{}.ext", cert.display());
    std::fs::write(
        &ext,
        format!("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n{extensions}"),
    )
    .expect("writing the extensions file");
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &key.display().to_string(),
        "-out",
        &csr,
        "-subj",
        &format!("/CN={cn}"),
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca.display().to_string(),
        "-CAkey",
        ca_key,
        "-CAcreateserial",
        "-out",
        &cert.display().to_string(),
        "-days",
        "3",
        "-extfile",
        &ext,
    ]);
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running openssl (is it installed?): {e}"));
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
