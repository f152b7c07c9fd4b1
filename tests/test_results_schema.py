"""Every part file of a run has the one declared schema: plain duckdb and pandas read every
column of every row, integer choices stay integers and timestamps are timestamps."""

from __future__ import annotations

import duckdb
import pandas as pd
import pyarrow.parquet as pq

from flipsearch import TrialConfig
from flipsearch.results import ResultsWriter, config_columns, decode_config, read_results, row_schema
from flipsearch.storage import Storage


def _row(cfg: TrialConfig, number: int) -> dict:
    return {"run_id": "r", "study": "s", "trial_number": number, "trial_uid": f"u{number}", "pack_id": f"u{number}",
            "pack_size": 1, **config_columns(cfg), "status": "ok", "epochs": 2, "nfr": 0.01, "val_nfr": 0.02,
            "started_at": 1.7e9, "finished_at": 1.7e9 + 3}


def test_parts_of_different_methods_share_one_schema(tmp_path):
    out = Storage.open(str(tmp_path))
    writer = ResultsWriter(out)
    bct = TrialConfig(method="bct", hparams={"lambda_c": 0.5})
    nr = TrialConfig(method="neurecover", hparams={"particles": 21, "iterations": 7})
    for i, cfg in enumerate((bct, nr)):
        writer.append(_row(cfg, i))
    files = sorted((tmp_path / "trials").glob("*.parquet"))
    assert len({pq.read_schema(f) for f in files}) == 1 and pq.read_schema(files[0]) == row_schema()
    con = duckdb.connect()
    got = con.sql(f"select hp_lambda_c, hp_particles, started_at from read_parquet('{tmp_path}/trials/*.parquet') "
                  "order by trial_number").fetchall()
    assert got[0][0] == 0.5 and got[0][1] is None and got[1][1] == 21 and isinstance(got[1][1], int)
    df = pd.read_parquet(tmp_path / "trials")
    assert set(row_schema().names) <= set(df.columns) and len(df) == 2
    assert str(df["started_at"].dtype).startswith("datetime64")
    rows = read_results(str(tmp_path))
    assert rows["hp_particles"].dtype == "Int64" and rows.loc[1, "hp_particles"] == 21
    assert decode_config(rows.iloc[1]) == nr and decode_config(rows.iloc[0]) == bct   # the row is the config
