"""`retention analyze`: reading and checking the file, the per-customer summary, the holdout
comparison, cohorts, and the command's outputs."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from retention_shared import cli
from segmentation_worker.domain.analysis import (
    AnalysisOptions,
    Columns,
    TransactionFileError,
    Transactions,
    analyse,
    cohort_retention,
    purchase_days,
    read_transactions,
    summarise,
)

COLUMNS = Columns(customer="customer", date="date", amount="amount")
START = date(2024, 1, 1)


def read(text: str, **options: Any) -> Transactions:
    return read_transactions(io.StringIO(text), COLUMNS, **options)


def simulated_shop(customers: int, seed: int, days: int = 540) -> list[tuple[str, str, str]]:
    """Rows (customer, date, amount) of customers who buy as the BG/NBD assumes: first purchases in
    the first quarter, then Poisson purchases until they drop out after some purchase."""
    rng = np.random.default_rng(seed)
    rows = []
    for number in range(customers):
        customer = f"c{number:05d}"
        rate = rng.gamma(0.8, 1 / 40.0)  # purchases per day
        dropout = rng.beta(1.0, 3.0)
        spend_scale = rng.gamma(4.0, 10.0)
        day = float(rng.integers(0, 90))
        while day < days:
            rows.append(
                (
                    customer,
                    (START + timedelta(days=int(day))).isoformat(),
                    f"{rng.gamma(5.0, spend_scale / 5):.2f}",
                )
            )
            if day > 0 and rng.uniform() < dropout:
                break
            day += rng.exponential(1 / rate) if rate > 0 else days
    order = rng.permutation(len(rows))
    return [rows[i] for i in order]


def as_csv(rows: list[tuple[str, str, str]]) -> str:
    return "customer,date,amount\n" + "".join(f"{c},{d},{a}\n" for c, d, a in rows)


class TestReadingTheFile:
    def test_iso_dates_compact_dates_and_timestamps_are_read(self) -> None:
        transactions = read(
            "customer,date,amount\n"
            "a,2024-03-01,10\n"
            "b,20240302,5.5\n"
            "a,2024-03-03T23:30:00+09:00,1\n"
            "c,2024-03-04T10:00:00Z,0\n"
        )
        assert transactions.customer_ids == ["a", "b", "c"]
        assert [date.fromordinal(d) for d in transactions.day.tolist()] == [
            date(2024, 3, 1),
            date(2024, 3, 2),
            date(2024, 3, 3),  # the day as written in its own time zone
            date(2024, 3, 4),
        ]
        assert transactions.amount.tolist() == [10.0, 5.5, 1.0, 0.0]

    def test_a_date_format_reads_other_layouts(self) -> None:
        transactions = read("customer,date,amount\na,31/01/2024,3\n", date_format="%d/%m/%Y")
        assert date.fromordinal(int(transactions.day[0])) == date(2024, 1, 31)

    def test_other_columns_order_and_blank_lines_do_not_matter(self) -> None:
        transactions = read("amount,note,customer,date\n\n7,hello,x,2024-01-02\n\n")
        assert transactions.rows == 1 and transactions.customer_ids == ["x"]

    def test_missing_columns_are_named_with_what_the_header_has(self) -> None:
        with pytest.raises(TransactionFileError) as error:
            read("client,date,total\na,2024-01-01,3\n")
        message = str(error.value)
        assert message.startswith("line 1:")
        assert "customer column 'customer'" in message and "amount column 'amount'" in message
        assert "'client'" in message and "'total'" in message

    @pytest.mark.parametrize(
        ("bad_line", "problem"),
        [
            ("a,2024-02-30,5", "cannot read date '2024-02-30'"),
            ("a,yesterday,5", "cannot read date 'yesterday'"),
            ("a,2024-01-05,-5", "negative amount -5"),
            ("a,2024-01-05,five", "cannot read amount 'five'"),
            ("a,2024-01-05,nan", "not a finite number"),
            (",2024-01-05,5", "empty customer id"),
            ("a,2024-01-05", "expected at least 3 fields"),
        ],
    )
    def test_a_bad_row_is_reported_with_its_line_number(self, bad_line: str, problem: str) -> None:
        # A quoted field spanning two lines comes first: the count is of lines, not of records.
        text = 'customer,date,amount\n"a\nb",2024-01-01,1\na,2024-01-02,2\n' + bad_line + "\n"
        with pytest.raises(TransactionFileError, match=problem) as error:
            read(text)
        assert error.value.line == 5

    def test_a_file_without_transactions_is_refused(self) -> None:
        with pytest.raises(TransactionFileError, match="no transactions"):
            read("customer,date,amount\n")
        with pytest.raises(TransactionFileError, match="empty"):
            read("")

    def test_progress_is_reported_while_reading(self) -> None:
        seen: list[int] = []
        read(as_csv(simulated_shop(40, seed=1)), on_progress=seen.append, progress_every=10)
        assert seen[:3] == [10, 20, 30] and seen[-1] > 30


class TestSummary:
    TEXT = (
        "customer,date,amount\n"
        "a,2024-01-01,10\n"
        "a,2024-01-01,5\n"  # same day: one purchase of 15
        "b,2024-01-20,7\n"
        "a,2024-01-15,20\n"
        "a,2024-02-01,30\n"
        "a,2024-03-01,99\n"  # after the calibration end
    )
    END = date(2024, 2, 10).toordinal()

    def test_days_are_the_unit_of_purchase_and_the_first_one_is_not_a_repeat(self) -> None:
        summary = summarise(purchase_days(read(self.TEXT)), self.END, days_per_unit=1)
        assert summary.frequency.tolist() == [2.0, 0.0]
        assert summary.recency.tolist() == [31.0, 0.0]
        assert summary.T.tolist() == [40.0, 21.0]
        assert summary.monetary_mean.tolist() == [25.0, 0.0]  # (20 + 30) / 2, the first left out
        assert summary.total_spend.tolist() == [65.0, 7.0]
        assert summary.days_since_last.tolist() == [9, 21]

    def test_weeks_divide_the_times_by_seven(self) -> None:
        summary = summarise(purchase_days(read(self.TEXT)), self.END, days_per_unit=7)
        assert summary.recency.tolist() == pytest.approx([31 / 7, 0.0])
        assert summary.T.tolist() == pytest.approx([40 / 7, 3.0])


class TestHoldoutAndCohorts:
    def test_holdout_counts_purchase_days_and_leaves_new_customers_out(self) -> None:
        text = (
            "customer,date,amount\n"
            "a,2024-01-01,10\na,2024-01-10,10\nb,2024-01-05,3\n"
            + "".join(f"x{i},2024-01-0{i},1\n" for i in range(1, 9))
            + "a,2024-02-02,1\na,2024-02-02,1\na,2024-02-20,1\nn,2024-02-05,4\n"
        )
        analysis = analyse(read(text), AnalysisOptions(calibration_end=date(2024, 1, 31), time_unit="days"))
        assert analysis.holdout is not None
        actual = dict(zip(analysis.customer_ids, analysis.holdout.actual.tolist(), strict=True))
        assert actual["a"] == 2.0 and actual["b"] == 0.0
        assert "n" not in actual and analysis.holdout.new_customers == 1
        assert analysis.holdout.length == 20  # 2024-02-01 .. 2024-02-20
        assert analysis.holdout.start == date(2024, 2, 1)

    def test_cohort_shares_count_each_customer_once_a_month(self) -> None:
        text = (
            "customer,date,amount\n"
            "a,2024-01-03,1\na,2024-02-03,1\na,2024-02-09,1\n"  # January cohort, back in February
            "b,2024-01-20,1\nb,2024-03-01,1\n"  # January cohort, back in March
            "c,2024-02-11,1\n"  # February cohort
        )
        cohorts = cohort_retention(purchase_days(read(text)))
        assert cohorts.cohorts == ["2024-01", "2024-02"]
        assert cohorts.sizes == [2, 1]
        assert cohorts.shares[0].tolist() == [1.0, 0.5, 0.5]
        assert cohorts.shares[1][:2].tolist() == [1.0, 0.0]
        assert np.isnan(cohorts.shares[1][2])  # March is as far as the file goes


class TestAnalyse:
    def test_predictions_for_every_customer_and_the_holdout_is_matched_in_total(self) -> None:
        rows = simulated_shop(3_000, seed=42)
        analysis = analyse(read(as_csv(rows)), AnalysisOptions(calibration_end=date(2024, 9, 30)))
        assert analysis.models.problems == ()
        n = analysis.customers
        assert n == len({row[0] for row in rows if row[1] <= "2024-09-30"})
        for values in (analysis.probability_alive, analysis.expected_purchases, analysis.clv):
            assert values is not None and values.shape == (n,) and np.all(np.isfinite(values))
            assert np.all(values >= 0)
        assert set(analysis.segment.tolist()) <= set(analysis.scheme.segment_names)
        holdout = analysis.holdout
        assert holdout is not None and holdout.predicted_total is not None
        # The customers behave as the model assumes, so the prediction must hold up in total.
        assert holdout.predicted_total == pytest.approx(holdout.actual_total, rel=0.15)
        assert holdout.correlation is not None and holdout.correlation > 0.4

    def test_the_order_of_the_rows_does_not_change_any_result(self) -> None:
        rows = simulated_shop(300, seed=8)
        options = AnalysisOptions(calibration_end=date(2024, 9, 30), time_unit="days")
        first = {row["customer_id"]: row for row in analyse(read(as_csv(rows)), options).rows()}
        second = {row["customer_id"]: row for row in analyse(read(as_csv(rows[::-1])), options).rows()}
        assert first.keys() == second.keys()
        for customer, row in first.items():
            other = second[customer]
            assert {k: v for k, v in row.items() if isinstance(v, str | int)} == {
                k: v for k, v in other.items() if isinstance(v, str | int)
            }
            for key, value in row.items():
                if isinstance(value, float):
                    assert value == pytest.approx(other[key], rel=1e-6), (customer, key)

    def test_without_repeat_buyers_the_models_are_left_out_with_reasons(self) -> None:
        text = "customer,date,amount\n" + "".join(f"c{i},2024-01-{i + 1:02d},5\n" for i in range(20))
        analysis = analyse(read(text), AnalysisOptions())
        assert len(analysis.models.problems) == 2
        assert "repeat purchase" in analysis.models.problems[0]
        assert analysis.probability_alive is None and analysis.clv is None
        row = next(analysis.rows())
        assert row["clv"] is None and row["segment"] in analysis.scheme.segment_names

    def test_a_calibration_end_before_the_data_is_refused(self) -> None:
        with pytest.raises(TransactionFileError, match="before the first transaction"):
            analyse(
                read("customer,date,amount\na,2024-01-05,1\n"),
                AnalysisOptions(calibration_end=date(2023, 1, 1)),
            )


@pytest.fixture(scope="module")
def retention() -> Any:
    cli.load_service_commands()
    runner = CliRunner()
    return lambda *arguments: runner.invoke(cli.app, list(arguments))


@pytest.fixture(scope="module")
def shop_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("analyze") / "orders.csv"
    path.write_text(as_csv(simulated_shop(400, seed=3)))
    return path


COLUMN_OPTIONS = ("--customer-col", "customer", "--date-col", "date", "--amount-col", "amount")


class TestCommand:
    def test_the_service_registers_analyze(self, retention: Any) -> None:
        assert "analyze" in {command.name for command in cli.app.registered_commands}
        assert retention("analyze", "--help").exit_code == 0

    def test_json_output_holds_the_fit_the_holdout_and_every_customer(
        self, retention: Any, shop_file: Path, tmp_path: Path
    ) -> None:
        out = tmp_path / "result.json"
        result = retention(
            "analyze",
            str(shop_file),
            *COLUMN_OPTIONS,
            "--calibration-end",
            "2024-09-30",
            "--format",
            "json",
            "--output",
            str(out),
            "--time-unit",
            "days",
            "--horizon",
            "90",
        )
        assert result.exit_code == 0, result.output
        assert "Fitted parameters" in result.stderr and "alpha" in result.stderr
        document = json.loads(out.read_text())
        assert set(document["models"]["bgnbd"]) == {"r", "alpha", "a", "b"}
        assert set(document["models"]["gamma_gamma"]) == {"p", "q", "v"}
        assert document["data"]["horizon"] == 90
        assert document["holdout"]["actual_repeat_purchases"] > 0
        customers = document["customers"]
        assert len(customers) == document["data"]["customers"]
        assert {
            "r_score",
            "segment",
            "probability_alive",
            "expected_purchases",
            "clv",
            "holdout_actual",
        } <= set(customers[0])

    def test_csv_goes_to_standard_output(self, retention: Any, shop_file: Path) -> None:
        result = retention("analyze", str(shop_file), *COLUMN_OPTIONS)
        assert result.exit_code == 0, result.output
        rows = list(csv.DictReader(io.StringIO(result.stdout)))
        assert rows and "holdout_actual" not in rows[0]  # no calibration end, no holdout
        assert all(float(row["clv"]) >= 0 for row in rows)

    def test_html_report_is_self_contained_with_its_charts(
        self, retention: Any, shop_file: Path, tmp_path: Path
    ) -> None:
        out = tmp_path / "report.html"
        result = retention(
            "analyze",
            str(shop_file),
            *COLUMN_OPTIONS,
            "--calibration-end",
            "2024-09-30",
            "--format",
            "html",
            "-o",
            str(out),
        )
        assert result.exit_code == 0, result.output
        html = out.read_text()
        assert html.count("<svg") == 4
        for title in (
            "Customers per segment",
            "Distribution of CLV",
            "monthly cohort",
            "Mean repeat purchases",
        ):
            assert title in html
        assert "<script" not in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")

    def test_text_from_the_file_is_escaped_in_the_report(self, retention: Any, tmp_path: Path) -> None:
        # A big spender who bought every week up to the end: certainly among the top customers.
        hostile = "<img src=x onerror=alert(1)>"
        weekly = [(hostile, (START + timedelta(weeks=week)).isoformat(), "900") for week in range(77)]
        source = tmp_path / "<b>orders.csv"
        source.write_text(as_csv(simulated_shop(200, seed=5) + weekly).replace(hostile, f'"{hostile}"'))
        out = tmp_path / "report.html"
        result = retention("analyze", str(source), *COLUMN_OPTIONS, "--format", "html", "-o", str(out))
        assert result.exit_code == 0, result.output
        html = out.read_text()
        assert "<img" not in html and "<b>" not in html
        assert "&lt;img src=x onerror=alert(1)&gt;" in html
        assert "&lt;b&gt;orders.csv" in html

    def test_without_repeat_buyers_the_report_says_why_the_models_are_missing(
        self, retention: Any, tmp_path: Path
    ) -> None:
        source = tmp_path / "first_orders.csv"
        source.write_text(
            "customer,date,amount\n" + "".join(f"c{i},2024-01-{i + 1:02d},5\n" for i in range(20))
        )
        out = tmp_path / "report.html"
        result = retention("analyze", str(source), *COLUMN_OPTIONS, "--format", "html", "-o", str(out))
        assert result.exit_code == 0, result.output
        assert "not fitted" in result.stderr
        html = out.read_text()
        assert "Not fitted: BG/NBD" in html and "Distribution of CLV" not in html
        assert "Customers per segment" in html

    def test_bad_input_names_the_line_and_writes_nothing(self, retention: Any, tmp_path: Path) -> None:
        source = tmp_path / "bad.csv"
        source.write_text("customer,date,amount\na,2024-01-01,5\na,2024-13-01,5\n")
        out = tmp_path / "out.json"
        result = retention("analyze", str(source), *COLUMN_OPTIONS, "--format", "json", "-o", str(out))
        assert result.exit_code == 2
        assert "line 3" in result.stderr and "2024-13-01" in result.stderr
        assert list(tmp_path.iterdir()) == [source]

    def test_an_existing_output_survives_a_failed_run(self, retention: Any, tmp_path: Path) -> None:
        source = tmp_path / "bad.csv"
        source.write_text("customer,day,amount\na,2024-01-01,5\n")
        out = tmp_path / "out.csv"
        out.write_text("previous results\n")
        result = retention("analyze", str(source), *COLUMN_OPTIONS, "-o", str(out))
        assert result.exit_code == 2 and "date column 'date'" in result.stderr
        assert out.read_text() == "previous results\n"

    def test_a_bad_calibration_end_is_a_usage_error(self, retention: Any, shop_file: Path) -> None:
        result = retention("analyze", str(shop_file), *COLUMN_OPTIONS, "--calibration-end", "30/09/2024")
        assert result.exit_code == 2 and "1997-09-30" in result.output
