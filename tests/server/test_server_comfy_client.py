"""A plain ComfyUI-style API client, written the way ComfyUI's own examples are (urllib for
/prompt, /history and /view; a websocket on /ws with a clientId), works unchanged."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
import uuid

from tests.server.wsclient import WSClient


class ComfyStyleClient:
    def __init__(self, server_address: str) -> None:
        self.server_address = server_address
        self.client_id = str(uuid.uuid4())

    def queue_prompt(self, prompt: dict) -> dict:
        p = {"prompt": prompt, "client_id": self.client_id}
        data = json.dumps(p).encode("utf-8")
        req = urllib.request.Request(f"http://{self.server_address}/prompt", data=data)
        return json.loads(urllib.request.urlopen(req).read())

    def get_image(self, filename: str, subfolder: str, folder_type: str) -> bytes:
        data = {"filename": filename, "subfolder": subfolder, "type": folder_type}
        url_values = urllib.parse.urlencode(data)
        with urllib.request.urlopen(f"http://{self.server_address}/view?{url_values}") as response:
            return response.read()

    def get_history(self, prompt_id: str) -> dict:
        with urllib.request.urlopen(f"http://{self.server_address}/history/{prompt_id}") as response:
            return json.loads(response.read())

    def get_images(self, ws: WSClient, prompt: dict) -> dict[str, list[bytes]]:
        prompt_id = self.queue_prompt(prompt)["prompt_id"]
        output_images: dict[str, list[bytes]] = {}
        while True:
            message = ws.recv(timeout=30)
            if message["type"] == "executing":
                data = message["data"]
                if data["node"] is None and data["prompt_id"] == prompt_id:
                    break  # execution is done
        history = self.get_history(prompt_id)[prompt_id]
        for node_id, node_output in history["outputs"].items():
            images_output = []
            for image in node_output.get("images", []):
                images_output.append(self.get_image(image["filename"], image["subfolder"], image["type"]))
            output_images[node_id] = images_output
        return output_images


def test_comfyui_style_client(server):
    client = ComfyStyleClient(f"127.0.0.1:{server.port}")
    prompt = json.loads(
        """{
        "3": {"class_type": "SlowCount", "inputs": {"steps": 4, "delay": 0.0, "start": 60}},
        "9": {"class_type": "SaveTestImage", "inputs": {"filename_prefix": "ComfyUI", "value": ["3", 0]}}
    }"""
    )
    prompt["3"]["inputs"]["start"] = 100  # as the example sets the seed
    ws = WSClient(f"ws://{client.server_address}/ws?clientId={client.client_id}")
    images = client.get_images(ws, prompt)
    ws.close()
    assert list(images) == ["9"] and len(images["9"]) == 1
    from io import BytesIO

    from PIL import Image

    with Image.open(BytesIO(images["9"][0])) as img:
        assert img.size == (8, 8) and img.getpixel((0, 0)) == 104
