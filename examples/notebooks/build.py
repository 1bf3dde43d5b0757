"""Writes the two notebooks (cv.ipynb, nlp.ipynb) from one outline, so they stay alike:
    python examples/notebooks/build.py
They mirror the reference's two load-test notebooks (one CV, one NLP) on mmesim's library."""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CASES = {
    "cv": {"title": "Computer vision: ResNet-50 and ViT-Large on an MME", "model": "resnet50",
           "big": "vit_large_patch16_224", "measured": "resnet50-python-cpu"},
    "nlp": {"title": "NLP: BERT-base and RoBERTa-large on an MME", "model": "bert-base-uncased",
            "big": "roberta-large", "measured": "tiny-bert-python-cpu"},
}


def cells(c: dict) -> list:
    m, big = c["model"], c["big"]
    return [
        new_markdown_cell(f"# {c['title']}\n\nThe reference load test (AWS blog, *Achieve high performance at scale "
                          "for model serving using Amazon SageMaker multi-model endpoints with GPU*) as a "
                          "prediction: pick profiles, predict the load test, run the max-models procedure, compare "
                          "frameworks, plot latency and throughput against users, and ask a what-if. Every "
                          "simulation takes a seed; nothing here needs a GPU."),
        new_code_cell("import matplotlib.pyplot as plt\nimport pandas as pd\n\n"
                      "from mmesim.derive.blog import profile_name, reference_rows\n"
                      "from mmesim.endpoint import EndpointConfig\n"
                      "from mmesim.frames import steps_frame, summary_frame\n"
                      "from mmesim.profile import load_profile, shipped_profiles\n"
                      "from mmesim.results.summary import summarize\n"
                      "from mmesim.sim import max_models_loaded, simulate\n"
                      "from mmesim.workload import load_workload\n\n"
                      "blog = load_workload('blog')\nSEED = 0"),
        new_markdown_cell("## 1. Profiles\nBuilt-in profiles were derived from the reference's published rows; "
                          f"`{c['measured']}` was calibrated on a real Triton on CPU (`mmesim calibrate`). "
                          "Calibrating your own model writes the same JSON."),
        new_code_cell(f"names = [n for n in shipped_profiles() if n.startswith(('{m}-', '{big}-'))]\n"
                      f"names.append('{c['measured']}')\n"
                      "profiles = {n: load_profile(n) for n in names}\n"
                      "pd.DataFrame([{'profile': n, 'gpu': p.gpu, 'framework': p.framework,\n"
                      "               'GPU MiB per copy': p.gpu_memory_bytes / 2**20, 'load s': p.load_s,\n"
                      "               'batch-1 ms': 1000 * p.service_time(1), 'source': p.provenance.method}\n"
                      "              for n, p in profiles.items()]).set_index('profile').round(1)"),
        new_markdown_cell("## 2. Predict the reference's load test\nThe blog's Locust stages (20 to 200 users), "
                          f"{m} with PyTorch on ml.g4dn.2xlarge (T4), as many copies as the max-models procedure "
                          "loads. The published row is beside it."),
        new_code_cell(f"ep = EndpointConfig(instance_type='ml.g4dn.2xlarge')\n"
                      f"run = simulate([profiles['{m}-pytorch-t4']], ep, blog, copies='auto', seed=SEED)\n"
                      "pred = summarize(run)\n"
                      f"row = next(r for r in reference_rows() if profile_name(r) == '{m}-pytorch-t4')\n"
                      "published = pd.Series({k: row[k] for k in ('max_models_loaded', 'latency_ms', "
                      "'throughput_qps', 'max_concurrent_users')}, name='published')\n"
                      "table = pd.concat([published, summary_frame(pred, names=['predicted']).T"
                      ".loc[published.index, 'predicted']], axis=1)\n"
                      "table['error %'] = 100 * (table['predicted'].astype(float) / table['published'] - 1)\n"
                      "assert pred.max_models_loaded == row['max_models_loaded']\n"
                      "table.round(1)"),
        new_markdown_cell("One row per request, as Locust's request log would hold it; here at the "
                          "reference's user steps:"),
        new_code_cell("requests = run.to_pandas()\n"
                      "assert len(requests) == pred.requests\n"
                      "at_steps = requests[requests['users'].isin(steps_frame(pred).index)]\n"
                      "at_steps.groupby('users').agg(requests=('latency_ms', 'size'), "
                      "p95_ms=('latency_ms', lambda s: s.quantile(0.95))).T.round(0)"),
        new_markdown_cell("## 3. The max-models procedure\nLoad copies one at a time and stop once "
                          "(used + one more) / total reaches the 90 % threshold, as the reference did."),
        new_code_cell("fig, ax = plt.subplots(figsize=(7, 3))\n"
                      "for fw in ('pytorch', 'tensorrt'):\n"
                      f"    counts, trace = max_models_loaded([profiles[f'{m}-{{fw}}-t4']], ep)\n"
                      "    ax.plot([n for n, _ in trace], [b / 2**30 for _, b in trace], label=f'{fw}: {counts[0]} models')\n"
                      "ax.set_xlabel('models loaded'); ax.set_ylabel('GPU memory used, GiB'); ax.legend();"),
        new_markdown_cell("## 4. Compare frameworks\nPyTorch against TensorRT, on the T4 and the A10G."),
        new_code_cell("summaries = {}\n"
                      "for gpu, instance in (('t4', 'ml.g4dn.2xlarge'), ('a10g', 'ml.g5.2xlarge')):\n"
                      "    for fw in ('pytorch', 'tensorrt'):\n"
                      f"        r = simulate([profiles[f'{m}-{{fw}}-{{gpu}}']], EndpointConfig(instance_type=instance),\n"
                      "                     blog, copies='auto', seed=SEED)\n"
                      "        summaries[f'{fw} on {instance}'] = summarize(r)\n"
                      "frameworks = summary_frame(*summaries.values(), names=list(summaries))\n"
                      "frameworks[['max_models_loaded', 'latency_ms', 'throughput_qps', 'max_concurrent_users', "
                      "'cost_per_million_usd']].round(2)"),
        new_markdown_cell("## 5. Latency and throughput against users"),
        new_code_cell("fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.5))\n"
                      "for name, s in summaries.items():\n"
                      "    steps = steps_frame(s)\n"
                      "    left.plot(steps.index, steps['rps'], marker='o', label=name)\n"
                      "    right.plot(steps.index, steps['p95_ms'], marker='o', label=name)\n"
                      "left.set(xlabel='users', ylabel='requests/s'); right.set(xlabel='users', ylabel='p95 ms', "
                      "yscale='log')\nleft.legend(fontsize=8);"),
        new_markdown_cell(f"## 6. What if?\nThe larger model, {big}, on the same endpoint: how many copies fit, "
                          "and what do 200 users see with one instance and with two?"),
        new_code_cell("whatif = {}\nfor count in (1, 2):\n"
                      "    e = EndpointConfig(instance_type='ml.g4dn.2xlarge', instance_count=count)\n"
                      f"    whatif[f'{big}, {{count}} instance(s)'] = summarize(simulate([profiles['{big}-pytorch-t4']], "
                      "e, blog, copies='auto', seed=SEED))\n"
                      "w = summary_frame(*whatif.values(), names=list(whatif))\n"
                      "assert w['cost_per_hour_usd'].iloc[1] > w['cost_per_hour_usd'].iloc[0]\n"
                      "w[['max_models_loaded', 'throughput_qps', 'p95_ms', 'failures', 'cost_per_hour_usd']].round(2)"),
        new_markdown_cell("## 7. This machine\nThe measured profile predicts a load test on this host "
                          "(`--instance local`), which `mmesim validate` can check against a real Triton. A CPU saturates long "
                          "before the blog's 200 users: the queue, not the model, sets the latency."),
        new_code_cell("local = EndpointConfig(instance_type='local', memory_budget_bytes=2 * 2**30)\n"
                      f"here = summarize(simulate([profiles['{c['measured']}']], local, blog, copies=2, seed=SEED))\n"
                      "summary_frame(here, names=['this host'])[['throughput_qps', 'p50_ms', 'p95_ms', 'failures']]"
                      ".round(1)"),
    ]


def main() -> None:
    here = Path(__file__).parent
    for name, case in CASES.items():
        nb = new_notebook(cells=cells(case), metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                       "language": "python"}})
        nbformat.write(nb, here / f"{name}.ipynb")


if __name__ == "__main__":
    main()
