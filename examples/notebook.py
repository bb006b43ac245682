"""The blocking client, as in a Jupyter cell or a plain script: no asyncio anywhere.

    kling-async emulator        # in another shell; export the three lines it prints
    python examples/notebook.py

Without those variables it talks to the real API ($EVOLINK_API_KEY).
"""

import kling_async as kling

with kling.SyncClient() as client:
    done = client.generate(
        kling.TextToVideo(prompt="A paper boat drifting down a rainy street"),
        on_progress=lambda update: print(update.status.value, f"{update.progress}%"))
    print("clip:", done.video_url, "(request id", done.request_id, ")")

    shots = {"boat-1": "the boat turns a corner", "boat-2": "the boat reaches a drain"}
    items = [kling.Item(kling.TextToVideo(prompt=text), key=key) for key, text in shots.items()]
    with client.generate_many(items, download_to="clips") as events:
        for event in events:
            if isinstance(event, kling.Succeeded):
                print(event.key, "saved to", event.path)
            elif isinstance(event, kling.Failed):
                print(event.key, "failed:", event.error)
