"""Fetch the pinned Kafka broker jars from Maven Central, once, into a cache.

The broker is the ``org.apache.kafka:kafka_2.13`` artifact and its runtime dependencies,
resolved by Maven (installed on the machine) rather than by downloading a release tarball,
because Maven Central is the artifact source every machine of ours reaches. The cache lives
outside the work tree (``~/.cache/changefeed`` by default) and is keyed by version, so a
second checkout or a CI run on the same machine starts warm.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from changefeed.config import SCALA_VERSION
from changefeed.errors import BrokerError

# Kafka 4 logs through log4j2 behind slf4j 1.7; the binding is not a dependency of the
# server artifact (the release tarball adds it), so it is named here.
_LOG4J_VERSION = "2.24.3"
_COMPLETE_MARKER = ".complete"

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>changefeed.local</groupId>
  <artifactId>kafka-broker-distribution</artifactId>
  <version>{kafka}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{scala}</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""


def libs_dir(dist_dir: Path) -> Path:
    return dist_dir / "libs"


def is_fetched(dist_dir: Path) -> bool:
    return (dist_dir / _COMPLETE_MARKER).exists()


def fetch_distribution(dist_dir: Path, kafka_version: str, *, quiet: bool = True) -> Path:
    """Make sure the jars of ``kafka_version`` are in ``dist_dir/libs``; return that folder.

    Idempotent: a completed fetch is marked and never repeated. A partial fetch (killed
    half-way) is redone from scratch in a temporary folder and moved into place, so the
    cache is never left half-filled.
    """
    if is_fetched(dist_dir):
        return libs_dir(dist_dir)
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError("Maven ('mvn') is needed to fetch the Kafka jars; install Maven")
    dist_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dist_dir.parent, prefix=".fetch-") as tmp:
        work = Path(tmp)
        (work / "pom.xml").write_text(
            _POM.format(kafka=kafka_version, scala=SCALA_VERSION, log4j=_LOG4J_VERSION)
        )
        cmd = [
            mvn,
            "-B",
            *(["-q"] if quiet else []),
            "-f",
            str(work / "pom.xml"),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={work / 'libs'}",
        ]
        result = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = (result.stdout + result.stderr)[-2000:]
            raise BrokerError(f"Maven could not fetch Kafka {kafka_version}:\n{tail}")
        jars = list((work / "libs").glob("*.jar"))
        if not any(j.name == f"kafka_{SCALA_VERSION}-{kafka_version}.jar" for j in jars):
            raise BrokerError(
                f"Maven finished but kafka_{SCALA_VERSION}-{kafka_version}.jar is missing"
            )
        if dist_dir.exists():
            shutil.rmtree(dist_dir)
        dist_dir.mkdir(parents=True)
        (work / "libs").rename(libs_dir(dist_dir))
        (dist_dir / _COMPLETE_MARKER).write_text(kafka_version + "\n")
    return libs_dir(dist_dir)
