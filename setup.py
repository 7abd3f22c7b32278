from setuptools import setup

setup(
    name="devpi_tx",
    version="0.1.0",
    description="A private Python package index and PyPI caching server on Twisted",
    long_description=open("README.rst").read(),
    long_description_content_type="text/x-rst",
    python_requires=">=3.11",
    packages=["devpi_tx", "devpi_tx.store", "devpi_tx.web", "twisted.plugins"],
    package_data={
        "devpi_tx": ["etc/*.in"],
        "devpi_tx.store": ["schema/*.sql"],
        "twisted": ["plugins/devpi_tx_plugin.py"],
    },
    install_requires=[
        "Twisted==26.10.0",
        "treq==26.7.0",
        "klein==24.8.0",
        "Werkzeug==3.1.9",
        "service-identity==26.1.0",
        "pyOpenSSL==26.4.0",
        "txpostgres==1.7.0",
        "psycopg2-binary==2.9.13",
        "zope.interface==8.7",
        "argon2-cffi==25.1.0",
        "packaging==26.3",
        "multipart==2.0.1",
        "PyYAML==6.0.3",
        "readme_renderer[md]==46.0",
        "comrak==0.0.16",
    ],
    entry_points={
        "console_scripts": [
            "devpi-tx-export = devpi_tx.cli:export_main",
            "devpi-tx-import = devpi_tx.cli:import_main",
            "devpi-tx-fsck = devpi_tx.cli:fsck_main",
        ],
    },
    extras_require={
        "test": [
            "devpi-client==7.3.0",
            "twine==7.0.0",
            "uv==0.13.9",
            "build==1.6.1",
            "setuptools==84.2.1",
            "wheel==0.48.0",
            "Sphinx==9.0.4",
            "tox==4.67.15",
            "prometheus_client==0.26.0",
        ],
    },
)
