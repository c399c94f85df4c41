"""What benchmarks/offline_site.py packs for an offline GPU node."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("offline_site",
                                              ROOT / "benchmarks" / "offline_site.py")
offline_site = importlib.util.module_from_spec(spec)
spec.loader.exec_module(offline_site)


def test_the_node_keeps_what_it_has_and_never_gets_torch() -> None:
    roots = offline_site.runtime_roots()
    pins = offline_site.closure(roots, have={"transformers", "numpy", "Rich"}, carry=set())
    assert "pydantic" in pins and "prefect" in pins
    assert "transformers" not in pins and "numpy" not in pins and "rich" not in pins
    assert not any(n == "torch" or n.startswith("nvidia-") for n in pins)
    import pydantic

    assert pins["pydantic"] == pydantic.VERSION  # the versions tested here, not the newest


def test_mlflow_goes_as_its_client_and_extras_are_followed() -> None:
    pins = offline_site.closure(offline_site.runtime_roots(), have=set(), carry=set())
    assert "mlflow-skinny" in pins and "mlflow" not in pins and "flask" not in pins
    assert "greenlet" in pins  # Prefect asks for sqlalchemy[asyncio]; the extra needs greenlet
    narrow = offline_site.closure([Requirement("sqlalchemy")], have=set(), carry=set())
    assert "greenlet" not in narrow


def test_carry_packs_a_package_the_node_has_and_have_reads_pip_freeze(tmp_path: Path) -> None:
    listing = tmp_path / "node.txt"
    listing.write_text("# pip list --format freeze\ndatasets==2.0.0\ntyping_extensions==4.1\n"
                       "pyyaml\n")
    have = offline_site.read_have(listing)
    assert have == {"datasets", "typing-extensions", "pyyaml"}
    pins = offline_site.closure(offline_site.runtime_roots(), have, carry={"datasets"})
    assert "datasets" in pins and "pyyaml" not in pins
