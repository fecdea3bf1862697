"""No module import circles in the package (the redesign's rule; import-linter's contracts check the layers, this
checks that no two modules reach each other, lazy imports inside functions included, as import-linter counts them).

Why a test: a circle is easy to close by accident with a lazy import (``imaging.series`` once imported
``imaging.nifti`` inside a function while ``nifti`` imports ``series``), and nothing else would notice.
"""

from __future__ import annotations

import grimp


def test_no_module_imports_a_module_that_imports_it_back() -> None:
    graph = grimp.build_graph("braintumor")
    circles = sorted(
        {
            tuple(sorted((importer, imported)))
            for importer in graph.modules
            for imported in graph.find_modules_directly_imported_by(importer)
            if graph.chain_exists(importer=imported, imported=importer)
        }
    )
    assert circles == [], f"import circles: {circles}"
