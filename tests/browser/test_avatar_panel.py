"""The Avatars panel in a real browser: the gallery shows thumbnails; an admin uploads a photo
through the form, watches the job's progress bar reach "done", and the new avatar appears in
the gallery and the picker; a wrong admin token is refused with a message on the page."""
from __future__ import annotations

import os
import uuid

import cv2
import httpx
import pytest
from skimage import data

from tests.browser.support import launch_page, open_app

pytestmark = pytest.mark.browser

TILE_IMG_LOADED_JS = """id => {
  const img = document.querySelector(`#avatar-gallery li[data-id="${id}"] img`);
  return !!img && img.complete && img.naturalWidth > 0;
}"""


async def test_upload_with_progress_then_listed_with_thumbnail(app_url, tmp_path):
    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    avatar_id = f"web-{uuid.uuid4().hex[:6]}"
    try:
        await _upload_through_the_page(app_url, tmp_path, photo, avatar_id)
    finally:
        async with httpx.AsyncClient(base_url=app_url, timeout=30) as http:
            response = await http.delete(f"/api/avatars/{avatar_id}",
                                         headers={"Authorization": f"Bearer {os.environ['DH_ADMIN_TOKEN']}"})
        assert response.status_code == 204


async def _upload_through_the_page(app_url, tmp_path, photo, avatar_id) -> None:
    async with launch_page(tmp_path / "profile") as page:
        errors, _ = await open_app(page, app_url)
        await page.wait_for_function(TILE_IMG_LOADED_JS, arg="default")

        # A wrong token: the server's 403 is shown, nothing is created.
        await page.set_input_files("#avatar-file", str(photo))
        await page.fill("#avatar-id", avatar_id)
        await page.fill("#admin-token", "not-the-token")
        await page.click("#avatar-upload")
        await page.wait_for_function(
            "() => /admin token/i.test(document.getElementById('avatar-progress-text').textContent)")

        await page.fill("#admin-token", os.environ["DH_ADMIN_TOKEN"])
        await page.fill("#avatar-name", "Web Astronaut")
        await page.click("#avatar-upload")
        await page.wait_for_function(
            "() => document.getElementById('avatar-progress-text').textContent.startsWith('Done')", timeout=120_000)
        assert await page.eval_on_selector("#avatar-progress", "p => p.value") == 100

        await page.wait_for_function(TILE_IMG_LOADED_JS, arg=avatar_id)
        tile = page.locator(f'#avatar-gallery li[data-id="{avatar_id}"]')
        text = (await tile.inner_text()).lower()  # the kind badge is upper-cased by CSS
        assert "web astronaut" in text and "photo" in text
        assert avatar_id in await page.eval_on_selector_all("#avatar-select option", "os => os.map((o) => o.value)")
        assert errors == []
