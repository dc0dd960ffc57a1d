//! What an operator would script instead of Resolve: boto3's `generate_presigned_url` in a loop, run by the
//! test virtualenv's Python over the same keys, timed around the loop alone.

use std::{path::PathBuf, process::Command, time::Duration};

use super::{
    Error,
    common::{TestStore, s3},
};

/// The Python of the test virtualenv (which has boto3, through moto), if installed.
pub fn python() -> Option<PathBuf> {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".test-env/venv/bin/python");
    python.is_file().then_some(python)
}

/// How long boto3 takes to presign `files` GET URLs of the sink `result_id` in `store`.
pub fn boto3(python: &PathBuf, store: &TestStore, result_id: &str, files: usize) -> Result<Duration, Error> {
    let TestStore::S3 { bucket, prefix, endpoint, .. } = store else { return Err("boto3 needs an S3 store".into()) };
    let script = r#"
import sys, time, boto3
from botocore.config import Config
endpoint, key_id, secret, bucket, sink, files = sys.argv[1:7]
client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key_id, aws_secret_access_key=secret,
                      region_name="us-east-1", config=Config(signature_version="s3v4"))
keys = [f"{sink}/part-{i:05}.parquet" for i in range(int(files))]
started = time.perf_counter()
urls = [client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=3600)
        for key in keys]
print(time.perf_counter() - started)
assert len(urls) == int(files)
"#;
    let output = Command::new(python)
        .args(["-c", script, endpoint, s3::ACCESS_KEY, s3::SECRET_KEY, bucket])
        .arg(format!("{prefix}/{result_id}"))
        .arg(files.to_string())
        .output()?;
    if !output.status.success() {
        return Err(format!("boto3 failed: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    let seconds: f64 = String::from_utf8(output.stdout)?.trim().parse()?;
    Ok(Duration::from_secs_f64(seconds))
}
