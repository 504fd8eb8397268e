"""Reading tables and series for the CLI and benchmarks; errors name the file and what is wrong."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from detectors.errors import InvalidInput


def read_table(path: str | Path) -> Any:
    """A CSV or Parquet file as a pandas DataFrame (format from the suffix; CSV otherwise)."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise InvalidInput(f"{p}: no such file")
    try:
        if p.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(p)
        else:
            try:
                df = pd.read_csv(p, engine="pyarrow")
            except (ImportError, ValueError):
                df = pd.read_csv(p)
    except pd.errors.EmptyDataError:
        raise InvalidInput(f"{p}: file is empty") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InvalidInput(f"{p}: cannot read as {'Parquet' if p.suffix.lower() in ('.parquet', '.pq') else 'CSV'}"
                           f": {exc}") from None
    if df.shape[1] == 0:
        raise InvalidInput(f"{p}: no columns")
    if len(df) == 0:
        raise InvalidInput(f"{p}: no rows")
    return df


def read_series(path: str | Path) -> Any:
    """A timestamp,value CSV as a DataFrame with exactly those columns, in file order."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise InvalidInput(f"{p}: no such file")
    try:
        df = pd.read_csv(p, dtype={"timestamp": str})
    except pd.errors.EmptyDataError:
        raise InvalidInput(f"{p}: file is empty") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InvalidInput(f"{p}: cannot read as CSV: {exc}") from None
    missing = [c for c in ("timestamp", "value") if c not in df.columns]
    if missing:
        raise InvalidInput(f"{p}: missing column(s) {missing}; expected columns timestamp,value "
                           f"(found {list(df.columns)})")
    if len(df) == 0:
        raise InvalidInput(f"{p}: no rows")
    try:
        df["value"] = pd.to_numeric(df["value"], errors="raise").astype(float)
    except (ValueError, TypeError):
        bad = pd.to_numeric(df["value"], errors="coerce").isna() & df["value"].notna()
        row = int(bad.to_numpy().argmax())
        raise InvalidInput(f"{p}: column 'value' is not numeric (data row {row + 1}: "
                           f"{df['value'].iloc[row]!r})") from None
    return df[["timestamp", "value"]]
