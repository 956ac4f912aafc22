"""Readers and writers of the platforms' own files, on small files in each platform's layout."""
import json

import numpy as np
import pandas as pd
import pytest

from crowdinfer import formats

# -- Label Studio: the "JSON" export of an image classification project --------------------------
LS_EXPORT = [
    {
        "id": 101,
        "data": {"image": "/data/upload/1/cat1.jpg"},
        "annotations": [
            {"id": 1, "completed_by": 3, "was_cancelled": False, "ground_truth": False,
             "result": [{"id": "a1", "type": "choices", "from_name": "choice", "to_name": "image",
                         "origin": "manual", "value": {"choices": ["Cat"]}}],
             "created_at": "2024-05-01T10:00:00.000000Z", "lead_time": 3.2, "task": 101},
            {"id": 2, "completed_by": {"id": 4, "email": "bo@example.org"}, "was_cancelled": False,
             "ground_truth": False,
             "result": [{"id": "a2", "type": "choices", "from_name": "choice", "to_name": "image",
                         "value": {"choices": ["Dog"]}}], "task": 101},
            {"id": 3, "completed_by": 5, "was_cancelled": False, "ground_truth": True,
             "result": [{"id": "a3", "type": "choices", "from_name": "choice", "to_name": "image",
                         "value": {"choices": ["Cat"]}}], "task": 101},
        ],
        "predictions": [],
        "meta": {}, "created_at": "2024-05-01T09:00:00.000000Z", "project": 1,
    },
    {
        "id": 102,
        "data": {"image": "/data/upload/1/dog1.jpg"},
        "annotations": [
            {"id": 4, "completed_by": 3, "was_cancelled": False, "ground_truth": False,
             "result": [{"id": "b1", "type": "choices", "from_name": "choice", "to_name": "image",
                         "value": {"choices": ["Dog"]}}], "task": 102},
            {"id": 5, "completed_by": 6, "was_cancelled": True, "ground_truth": False,
             "result": [], "task": 102},
        ],
        "predictions": [],
    },
]


def test_label_studio_export(tmp_path):
    path = tmp_path / "export.json"
    path.write_text(json.dumps(LS_EXPORT))
    with pytest.warns(UserWarning, match="1 cancelled"):
        ann = formats.read(path, "label_studio")
    assert ann.n_annotations == 3 and ann.n_items == 2  # ground truth is gold, not an answer
    assert sorted(ann.worker_ids.tolist()) == ["3", "bo@example.org"]
    assert list(ann.classes) == ["Cat", "Dog"]
    gold = dict(zip(ann.item_ids.tolist(), ann.gold.tolist()))
    assert gold == {101: 0, 102: -1}  # Label Studio's integer task ids stay integers
    with pytest.warns(UserWarning):
        by_data = formats.read_label_studio(path, item="image")
    assert sorted(by_data.item_ids.tolist()) == ["/data/upload/1/cat1.jpg", "/data/upload/1/dog1.jpg"]


def test_label_studio_integer_ids_sort_as_numbers(tmp_path):
    tasks = []
    for task_id in (2, 10, 1, 11):
        task = json.loads(json.dumps(LS_EXPORT[1]))
        task["id"] = task_id
        task["annotations"] = task["annotations"][:1]
        tasks.append(task)
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks))
    ann = formats.read_label_studio(path, classes=["Cat", "Dog"])
    assert ann.item_ids.tolist() == [1, 2, 10, 11]  # as text they would order 1, 10, 11, 2
    tasks[0]["id"] = "a-7"  # a mixed export: every id becomes text, so that they still sort
    path.write_text(json.dumps(tasks))
    mixed = formats.read_label_studio(path, classes=["Cat", "Dog"])
    assert mixed.item_ids.tolist() == ["1", "10", "11", "a-7"]


def test_label_studio_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("[{\"id\": 1, \"data\": {}}")
    with pytest.raises(ValueError, match="not valid JSON"):
        formats.read(bad, "label_studio")
    bad.write_text(json.dumps([{"id": 1, "image": "x.jpg", "choice": "Cat"}]))
    with pytest.raises(ValueError, match="task #0 has no 'data'"):
        formats.read(bad, "label_studio")
    bad.write_text(json.dumps([{"id": 1, "data": {"image": "x"}}]))
    with pytest.raises(ValueError, match="JSON_MIN"):
        formats.read(bad, "label_studio")
    multi = json.loads(json.dumps(LS_EXPORT))
    multi[0]["annotations"][0]["result"][0]["value"]["choices"] = ["Cat", "Dog"]
    bad.write_text(json.dumps(multi))
    with pytest.raises(ValueError, match="task 101, annotation #0: expected exactly one"):
        formats.read(bad, "label_studio")
    with pytest.raises(ValueError, match="unknown format 'lsjson'"):
        formats.read(bad, "lsjson")


def test_label_studio_predictions_round_trip(tmp_path):
    import crowdinfer

    path = tmp_path / "export.json"
    path.write_text(json.dumps(LS_EXPORT))
    with pytest.warns(UserWarning):
        ann = formats.read(path, "label_studio")
    post = crowdinfer.fit(ann, model="majority_vote")
    out = tmp_path / "pre.json"
    assert formats.write_label_studio_predictions(post, out, tasks=path) == 2
    written = json.loads(out.read_text())
    first = next(t for t in written if t["data"]["image"].endswith("dog1.jpg"))
    pred = first["predictions"][0]
    assert pred["result"][0]["value"]["choices"] == ["Dog"] and pred["result"][0]["type"] == "choices"
    assert pred["score"] == pytest.approx(float(post.confidence[list(ann.item_ids).index(102)]))
    with pytest.raises(ValueError, match="item 'nope' is not a task"):
        formats.write_label_studio_predictions(
            pd.DataFrame({"item": ["nope"], "label": ["Cat"], "confidence": [0.9]}), out, tasks=path)


# -- Toloka: the results TSV of a pool ------------------------------------------------------------
TOLOKA = (
    "INPUT:image\tOUTPUT:result\tGOLDEN:result\tHINT:text\tASSIGNMENT:link\t"
    "ASSIGNMENT:assignment_id\tASSIGNMENT:worker_id\tASSIGNMENT:status\tASSIGNMENT:started\n"
    "https://img.example.org/1.jpg\tcat\tcat\t\thttps://toloka.yandex.com/task/1/0001\t0001--aa\tw1\tAPPROVED\t2024-05-01T10:00:00\n"
    "https://img.example.org/1.jpg\tdog\tcat\t\thttps://toloka.yandex.com/task/1/0002\t0002--aa\tw2\tAPPROVED\t2024-05-01T10:01:00\n"
    "https://img.example.org/2.jpg\tdog\t\t\thttps://toloka.yandex.com/task/1/0001\t0001--aa\tw1\tAPPROVED\t2024-05-01T10:00:00\n"
    "https://img.example.org/2.jpg\tdog\t\t\thttps://toloka.yandex.com/task/1/0003\t0003--aa\tw3\tSUBMITTED\t2024-05-01T10:02:00\n"
    "https://img.example.org/3.jpg\tbird\t\t\thttps://toloka.yandex.com/task/1/0004\t0004--aa\tw4\tREJECTED\t2024-05-01T10:03:00\n"
    "https://img.example.org/3.jpg\t\"bird\"\t\t\thttps://toloka.yandex.com/task/1/0002\t0002--aa\tw2\tAPPROVED\t2024-05-01T10:01:00\n"
)


def test_toloka_results(tmp_path):
    path = tmp_path / "assignments.tsv"
    path.write_text(TOLOKA)
    with pytest.warns(UserWarning, match=r"1 answer\(s\) of REJECTED assignments dropped \(lines 6\)"):
        ann = formats.read(path, "toloka")
    assert ann.n_annotations == 5 and ann.n_workers == 3
    assert list(ann.classes) == ["bird", "cat", "dog"]
    gold = dict(zip(ann.item_ids.tolist(), ann.gold.tolist()))
    assert gold["https://img.example.org/1.jpg"] == 1 and gold["https://img.example.org/2.jpg"] == -1


def test_toloka_errors(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("INPUT:image\tOUTPUT:result\nx\tcat\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['ASSIGNMENT:worker_id'\]"):
        formats.read(path, "toloka")
    path.write_text("INPUT:image\tOUTPUT:a\tOUTPUT:b\tASSIGNMENT:worker_id\nx\tcat\tdog\tw1\n")
    with pytest.raises(ValueError, match="several OUTPUT: column"):
        formats.read(path, "toloka")
    assert formats.read_toloka(path, output="b", classes=["cat", "dog"]).classes.tolist() == ["cat", "dog"]
    path.write_text("INPUT:image\tOUTPUT:r\tGOLDEN:r\tASSIGNMENT:worker_id\nx\tcat\tcat\tw1\nx\tcat\tdog\tw2\n")
    with pytest.raises(ValueError, match="line 3: item 'x' has two different GOLDEN:r"):
        formats.read(path, "toloka")


# -- Mechanical Turk: a batch results CSV ---------------------------------------------------------
MTURK_HEAD = ('"HITId","HITTypeId","Title","Reward","AssignmentId","WorkerId","AssignmentStatus",'
              '"AcceptTime","SubmitTime","WorkTimeInSeconds","Input.image_url",{answers},"Approve","Reject"\n')


def _mturk(answers, rows):
    lines = [MTURK_HEAD.format(answers=",".join(f'"{a}"' for a in answers))]
    for hit, worker, status, url, values in rows:
        vals = ",".join(f'"{v}"' for v in values)
        lines.append(f'"{hit}","3T1","Classify","$0.05","A{worker}{hit}","{worker}","{status}",'
                     f'"Mon May 01 10:00:00 PDT 2024","Mon May 01 10:01:00 PDT 2024","60",'
                     f'"{url}",{vals},"",""\n')
    return "".join(lines)


def test_mturk_batch_results(tmp_path):
    path = tmp_path / "Batch_123_batch_results.csv"
    path.write_text(_mturk(["Answer.category.label"], [
        ("H1", "AW1", "Approved", "https://x/1.jpg", ["Cat"]),
        ("H1", "AW2", "Submitted", "https://x/1.jpg", ["Cat"]),
        ("H1", "AW3", "Rejected", "https://x/1.jpg", ["Dog"]),
        ("H2", "AW1", "Approved", "https://x/2.jpg", ["Dog"]),
        ("H2", "AW2", "Approved", "https://x/2.jpg", ["Dog"]),
    ]))
    with pytest.warns(UserWarning, match=r"1 Rejected assignment\(s\) dropped \(lines 4\)"):
        ann = formats.read(path, "mturk")
    assert ann.n_annotations == 4 and ann.n_workers == 2  # AW3's only answer was rejected
    assert sorted(ann.item_ids.tolist()) == ["https://x/1.jpg", "https://x/2.jpg"]
    with pytest.warns(UserWarning):
        gold = formats.read_mturk(path, gold={"H1": "Cat"}, item="HITId")
    assert sorted(gold.item_ids.tolist()) == ["H1", "H2"] and gold.gold.tolist() == [0, -1]


def test_mturk_radio_buttons_and_errors(tmp_path):
    path = tmp_path / "radio.csv"
    path.write_text(_mturk(["Answer.animal.cat", "Answer.animal.dog"], [
        ("H1", "AW1", "Approved", "u1", ["true", "false"]),
        ("H1", "AW2", "Approved", "u1", ["false", "true"]),
        ("H2", "AW1", "Approved", "u2", ["false", "true"]),
    ]))
    ann = formats.read(path, "mturk")
    assert list(ann.classes) == ["cat", "dog"] and ann.n_annotations == 3
    path.write_text(_mturk(["Answer.animal.cat", "Answer.animal.dog"], [
        ("H1", "AW1", "Approved", "u1", ["true", "true"])]))
    with pytest.raises(ValueError, match=r"more than one choice .* line\(s\) 2"):
        formats.read(path, "mturk")
    path.write_text('"HITId","WorkerId","Answer.x"\n"H1","W1","a"\n')
    with pytest.raises(ValueError, match=r"not a Mechanical Turk results file: missing column\(s\) \['AssignmentStatus'\]"):
        formats.read(path, "mturk")
    path.write_text(_mturk(["Answer.q1", "Answer.comment"], [("H1", "AW1", "Approved", "u", ["a", "nice"])]))
    with pytest.raises(ValueError, match="several Answer.* columns"):
        formats.read(path, "mturk")
    path.write_text('"HITId","WorkerId","AssignmentStatus","Answer.x"\n"H1","W1","Approved","a"\n'
                    '"H2","W2","Approved","b","c","d"\n')
    with pytest.raises(ValueError, match="not a well-formed CSV file: .*line 3"):
        formats.read(path, "mturk")


def test_plain_tables(tmp_path):
    df = pd.DataFrame({"item": ["a", "a", "b"], "worker": ["u", "v", "u"], "label": ["x", "y", "y"]})
    df.to_csv(tmp_path / "a.tsv", sep="\t", index=False)
    df.to_parquet(tmp_path / "a.parquet")
    df.to_csv(tmp_path / "a.csv", index=False)
    for fmt in ("csv", "tsv", "parquet"):
        ann = formats.read(tmp_path / f"a.{fmt}", fmt)
        assert ann.n_annotations == 3 and list(ann.classes) == ["x", "y"], fmt
    with pytest.raises(FileNotFoundError, match="no such file"):
        formats.read(tmp_path / "missing.csv", "csv")
    assert np.array_equal(formats.read(tmp_path / "a.csv", "csv").label,
                          formats.read(tmp_path / "a.parquet", "parquet").label)
