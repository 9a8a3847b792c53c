"""Train both stages (small), export the two-stage SavedModel and its portable twin, load the
export with plain `tf.saved_model.load` and query its `serving_default` signature.

    python examples/export_and_query.py [--out saved_models]

Writes `<out>/example/<version>/` (ScaNN retrieval) and `<out>/example_portable/<version>/`
(core TensorFlow ops only: what stock TF Serving loads); by default `<out>` is a temporary
directory. Prints the ranked video ids with their expected watch times, and the TF Serving REST
body of the same request. TFRS_YOUTUBE_EXAMPLE_SIZE=small uses a tiny log and one epoch.
"""

import argparse
import json
import os
import tempfile

import numpy as np

import tfrs_youtube  # noqa: F401  (first: selects Keras 2)
import tensorflow as tf
from tfrs_youtube import (
    export_with_warmup, generate_event_log, held_out_requests, parse_rest_request, presets, read_metadata,
    rest_body, rest_response_body, SyntheticConfig, take_requests, train_two_stage,
)

SMALL = os.environ.get("TFRS_YOUTUBE_EXAMPLE_SIZE") == "small"

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--out", default=None, help="base directory of the export (default: a temporary directory)")
args = parser.parse_args()
out = args.out or tempfile.mkdtemp(prefix="tfrs-youtube-example-")

# 1. Train both stages on a small synthetic log (the demo's settings, fewer epochs).
log = generate_event_log(SyntheticConfig.tiny(seed=0) if SMALL else SyntheticConfig(num_users=1000, num_videos=1000, seed=0))
config = presets.synthetic_demo(seed=0)
config.candidate_epochs = config.ranker_epochs = 1 if SMALL else 3
config.serving.num_candidates = 100  # ScaNN's top-N handed to the ranker
system = train_two_stage(log, config, verbose=0)  # examples (the Beam pipeline), both stages, evaluation
print(f"trained on {len(log.watches)} watches and {len(log.impressions)} impressions; "
      f"held-out HR@10 {system.report['retrieval']['tfrs_youtube']['HR@10']:.3f}")

# 2. Export: TF Serving's layout, both variants, with a warmup request, ScaNN's recall measured on
#    the test users, and metadata.
paths = export_with_warmup(system.recommender, system.examples, out, "example", metadata={"evaluation": system.report})
print(f"exported {paths['scann']} and {paths['portable']}")
print("index:", json.dumps(read_metadata(paths["scann"])["index"]))

# 3. Load with plain TensorFlow. The portable twin needs nothing else; the ScaNN variant needs
#    ScaNN's ops registered first (`import scann`), as a TF Serving build with ScaNN has them.
model = tf.saved_model.load(paths["portable"])
held_out, records = held_out_requests(system.examples)  # each test user's request, as of their held-out moment
requests = take_requests(held_out, slice(0, 2))  # raw strings and numbers, as a client sends them
print("signatures:", sorted(model.signatures))
serve = model.signatures["serving_default"]
inputs = {name: tf.constant(requests[name], spec.dtype)
          for name, spec in serve.structured_input_signature[1].items()}
answer = serve(**inputs)
for i, user in enumerate(records["user_id"][:2]):
    print(f"\nuser {user.decode()}: last watches {[v for v in requests['watch_history'][i][:5] if v]}")
    for rank, (video, seconds) in enumerate(zip(answer["video_ids"][i].numpy().astype(str),
                                                answer["expected_watch_time_s"][i].numpy()), 1):
        print(f"  {rank:>2}. {video:<8} expected watch time {seconds:6.1f} s")

import scann  # noqa: E402,F401  (registers ScaNN's TF ops)

scann_model = tf.saved_model.load(paths["scann"])
same = scann_model.signatures["serving_default"](**inputs)["video_ids"].numpy()
print(f"\nScaNN variant: {np.mean(same == answer['video_ids'].numpy()):.0%} of the same top-{same.shape[1]} slots "
      "as the exact twin")

# 4. The same request as a TF Serving REST body (POST it to /v1/models/example:predict).
body = rest_body(requests, np.arange(1))
with open(os.path.join(out, "request.json"), "w") as f:
    json.dump(body, f)
print("\nREST body:", json.dumps(body)[:600], "...")
parsed, form = parse_rest_request(body, serve)  # what `tfrs-youtube recommend` does with a body
print("REST answer:", json.dumps(rest_response_body(serve(**parsed), form))[:300], "...")
print(f"\ncurl -d @{out}/request.json http://localhost:8501/v1/models/example:predict   # TF Serving, with "
      f"docker run -p 8501:8501 -v {os.path.dirname(paths['portable'])}:/models/example "
      "-e MODEL_NAME=example tensorflow/serving")
