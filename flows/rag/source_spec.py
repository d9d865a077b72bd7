"""Every source's spec, discriminated by ``kind``: what the flows take as their ``source`` parameter, which the
Prefect UI renders as a form with one branch per source.

Apart from flows/rag/resources.py because the Drive spec names its credentials block, whose class imports Prefect
(~1 s), and a search opens resources but reads no source.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from flows.rag.sources.gdrive import GoogleDriveSpec
from flows.rag.sources.local import LocalFolderSpec

SourceSpec = Annotated[LocalFolderSpec | GoogleDriveSpec, Field(discriminator="kind")]
