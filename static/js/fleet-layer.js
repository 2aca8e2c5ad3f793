// The fleet drawn on one canvas over the map: each vehicle an arrow along its heading (a dot when
// the heading is unknown), coloured by its activity, the selected one highlighted and named, and,
// zoomed out, clusters with their count. A DOM marker per vehicle costs a layout and a style
// recalculation per move; thousands of them moving every second starve the page, one canvas
// redraw a frame does not.
//
// Clustering is `supercluster` (vendored from npm, with its `kdbush`): it indexes a few thousand
// points in milliseconds and answers a viewport's clusters in well under one, so the index can be
// rebuilt from the live positions about once a second while the markers themselves move every
// frame. (Leaflet.markercluster keeps one DOM marker per point and re-clusters on every move,
// which is the cost this layer exists to avoid.)
//
// What was drawn is on the map element, so people and tests can read it without a test-only
// path: data-zoom, data-drawn-vehicles, data-drawn-clusters, data-selected-vehicle and, when the
// selected vehicle is on screen, data-selected-x / data-selected-y (its point in the map's pixels).

/* global L, Supercluster */

const CLUSTER_RADIUS_PX = 40;
/** Zoomed in beyond this, every vehicle is drawn on its own. */
const CLUSTER_UNTIL_ZOOM = 14;
/** The index follows moving vehicles at most this often (and at once on zoom or a new vehicle). */
const REINDEX_MS = 1000;
const HIT_SLOP_PX = 4;

const COLOURS = {
  moving: '#16a34a',
  stopped: '#2563eb',
  silent: '#94a3b8',
  none: '#cbd5e1',
  selected: '#f97316',
  cluster: '#1d4ed8',
};

/**
 * @param {L.Map} map
 * @param {object} o
 * @param {() => Iterable<object>} o.vehicles  every vehicle: { id, name, pos: {lat, lon, heading} | null }
 * @param {(id: number) => object} o.get        one vehicle by id (undefined when gone)
 * @param {(v: object) => string} o.activity   moving | stopped | silent | none
 * @param {(id: number) => void} o.onSelect     a vehicle was clicked
 */
export function createFleetLayer(map, { vehicles, get, activity, onSelect }) {
  const pane = map.createPane('fleet');
  pane.classList.add('wm-fleet-pane');
  const canvas = L.DomUtil.create('canvas', 'wm-fleet leaflet-zoom-hide', pane);
  const ctx = canvas.getContext('2d');
  const el = map.getContainer();
  const tooltip = L.tooltip({ className: 'wm-tooltip', direction: 'top', offset: [0, -12] });
  const tooltipText = document.createElement('span');

  let selectedId = null;
  let index = null;
  let indexedAt = -Infinity;
  let indexZoom = null;
  let indexStale = true;
  let frame = 0;
  let zooming = false;
  /** What the last draw put where, topmost last: { x, y, r, id } or { x, y, r, cluster, lat, lon }. */
  let hits = [];
  /** Vehicles the last draw showed on their own (the rest were inside clusters or off screen). */
  let drawnIds = new Set();
  const shown = {};

  function reindex(now) {
    const points = [];
    for (const v of vehicles()) {
      if (!v.pos) continue;
      points.push({
        type: 'Feature',
        properties: { id: v.id },
        geometry: { type: 'Point', coordinates: [v.pos.lon, v.pos.lat] },
      });
    }
    // extent 256: supercluster's tiles are then Leaflet's, so the radius is in screen pixels.
    index = new Supercluster({ radius: CLUSTER_RADIUS_PX, extent: 256, maxZoom: CLUSTER_UNTIL_ZOOM });
    index.load(points);
    indexedAt = now;
    indexStale = false;
  }

  function resize() {
    const size = map.getSize();
    const ratio = window.devicePixelRatio || 1;
    const w = Math.round(size.x * ratio);
    const h = Math.round(size.y * ratio);
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w;
      canvas.height = h;
      canvas.style.width = `${size.x}px`;
      canvas.style.height = `${size.y}px`;
    }
    // The pane moves with the map while it is dragged; the canvas stays over the container.
    L.DomUtil.setPosition(canvas, map.containerPointToLayerPoint([0, 0]));
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    return size;
  }

  function drawVehicle(x, y, v, selected) {
    const heading = v.pos.heading;
    const colour = selected ? COLOURS.selected : COLOURS[activity(v)] || COLOURS.none;
    const scale = selected ? 1.35 : 1;
    ctx.save();
    ctx.translate(x, y);
    if (selected) {
      ctx.beginPath();
      ctx.arc(0, 0, 15, 0, 2 * Math.PI);
      ctx.fillStyle = 'rgba(249, 115, 22, 0.22)';
      ctx.fill();
    }
    ctx.scale(scale, scale);
    ctx.lineWidth = 2;
    ctx.strokeStyle = '#fff';
    ctx.fillStyle = colour;
    ctx.beginPath();
    if (typeof heading === 'number' && Number.isFinite(heading)) {
      ctx.rotate((heading * Math.PI) / 180);
      ctx.moveTo(0, -9);
      ctx.lineTo(7, 8);
      ctx.lineTo(0, 4);
      ctx.lineTo(-7, 8);
      ctx.closePath();
    } else {
      ctx.arc(0, 0, 6, 0, 2 * Math.PI);
    }
    ctx.stroke();
    ctx.fill();
    ctx.restore();
  }

  function drawCluster(x, y, count) {
    const r = count < 10 ? 14 : count < 100 ? 17 : count < 1000 ? 20 : 23;
    ctx.beginPath();
    ctx.arc(x, y, r + 4, 0, 2 * Math.PI);
    ctx.fillStyle = 'rgba(37, 99, 235, 0.22)';
    ctx.fill();
    ctx.beginPath();
    ctx.arc(x, y, r, 0, 2 * Math.PI);
    ctx.fillStyle = COLOURS.cluster;
    ctx.fill();
    ctx.fillStyle = '#fff';
    ctx.fillText(count >= 10000 ? `${Math.round(count / 1000)}k` : String(count), x, y + 0.5);
    return r + 4;
  }

  function drawLabel(x, y, text) {
    ctx.font = '600 12px system-ui, sans-serif';
    const w = ctx.measureText(text).width + 12;
    ctx.fillStyle = 'rgba(15, 23, 42, 0.92)';
    ctx.beginPath();
    ctx.roundRect(x - w / 2, y - 38, w, 20, 6);
    ctx.fill();
    ctx.fillStyle = '#fff';
    ctx.fillText(text, x, y - 28);
  }

  /** Redraw now. Cheap enough to call every animation frame. */
  function draw() {
    if (frame) window.cancelAnimationFrame(frame);
    frame = 0;
    // While Leaflet animates a zoom the canvas is hidden (leaflet-zoom-hide); zoomend redraws.
    if (zooming) return;
    const size = resize();
    ctx.clearRect(0, 0, size.x, size.y);
    const zoom = map.getZoom();
    const now = performance.now();
    if (!index || indexStale || zoom !== indexZoom || now - indexedAt >= REINDEX_MS) {
      reindex(now);
      indexZoom = zoom;
    }
    const bounds = map.getBounds().pad(0.1);
    const bbox = [bounds.getWest(), bounds.getSouth(), bounds.getEast(), bounds.getNorth()];
    const next = [];
    const ids = new Set();
    let drawnVehicles = 0;
    let drawnClusters = 0;
    ctx.textAlign = 'center';
    ctx.textBaseline = 'middle';
    ctx.font = '700 12px system-ui, sans-serif';
    const features = index.getClusters(bbox, Math.round(zoom));
    for (const f of features) {
      const p = f.properties;
      if (p.cluster) {
        const [lon, lat] = f.geometry.coordinates;
        const pt = map.latLngToContainerPoint([lat, lon]);
        const r = drawCluster(pt.x, pt.y, p.point_count);
        next.push({ x: pt.x, y: pt.y, r, cluster: p.cluster_id, lat, lon });
        drawnClusters += 1;
        continue;
      }
      // A single vehicle is drawn where it is now, not where it was when the index was built.
      const v = get(p.id);
      if (!v || !v.pos || v.id === selectedId) continue;
      const pt = map.latLngToContainerPoint([v.pos.lat, v.pos.lon]);
      drawVehicle(pt.x, pt.y, v, false);
      next.push({ x: pt.x, y: pt.y, r: 10, id: v.id });
      ids.add(v.id);
      drawnVehicles += 1;
    }
    // The selected vehicle always on top, even inside a cluster.
    let sel = null;
    const selected = selectedId == null ? null : get(selectedId);
    if (selected && selected.pos) {
      const pt = map.latLngToContainerPoint([selected.pos.lat, selected.pos.lon]);
      if (pt.x >= 0 && pt.y >= 0 && pt.x <= size.x && pt.y <= size.y) {
        drawVehicle(pt.x, pt.y, selected, true);
        drawLabel(pt.x, pt.y, selected.name);
        next.push({ x: pt.x, y: pt.y, r: 14, id: selected.id });
        drawnVehicles += 1;
        sel = pt;
      }
    }
    hits = next;
    drawnIds = ids;
    expose({
      drawnVehicles: String(drawnVehicles),
      drawnClusters: String(drawnClusters),
      zoom: String(zoom),
      selectedVehicle: selectedId == null ? '' : String(selectedId),
      selectedX: sel ? sel.x.toFixed(1) : '',
      selectedY: sel ? sel.y.toFixed(1) : '',
    });
  }

  function expose(values) {
    for (const [key, value] of Object.entries(values)) {
      if (shown[key] !== value) {
        shown[key] = value;
        el.dataset[key] = value;
      }
    }
  }

  /** Redraw in the next animation frame (once, however often asked). */
  function redrawSoon() {
    if (!frame) frame = window.requestAnimationFrame(draw);
  }

  function hitAt(point) {
    for (let i = hits.length - 1; i >= 0; i -= 1) {
      const h = hits[i];
      const dx = h.x - point.x;
      const dy = h.y - point.y;
      if (dx * dx + dy * dy <= (h.r + HIT_SLOP_PX) ** 2) return h;
    }
    return null;
  }

  map.on('click', (e) => {
    const hit = hitAt(e.containerPoint);
    if (!hit) return;
    if (hit.cluster !== undefined) {
      const zoom = Math.min(index.getClusterExpansionZoom(hit.cluster), map.getMaxZoom());
      map.setView([hit.lat, hit.lon], Math.max(zoom, map.getZoom() + 1));
    } else {
      onSelect(hit.id);
    }
  });

  map.on('mousemove', (e) => {
    const hit = hitAt(e.containerPoint);
    el.classList.toggle('wm-fleet-hover', !!hit);
    if (hit && hit.id !== undefined) {
      const v = get(hit.id);
      if (v && v.pos) {
        tooltipText.textContent = v.name;
        tooltip.setLatLng([v.pos.lat, v.pos.lon]).setContent(tooltipText);
        if (!map.hasLayer(tooltip)) tooltip.addTo(map);
        return;
      }
    }
    if (map.hasLayer(tooltip)) tooltip.remove();
  });
  map.on('mouseout', () => {
    if (map.hasLayer(tooltip)) tooltip.remove();
  });
  map.on('zoomstart', () => {
    zooming = true;
  });
  map.on('zoomend', () => {
    zooming = false;
    redrawSoon();
  });
  map.on('move resize viewreset', redrawSoon);

  return {
    draw,
    redrawSoon,
    /**
     * Whether a new position of vehicle `id` changes the picture now: it is drawn on its own (or
     * selected), or the clusters are due to be rebuilt. A vehicle inside a cluster only moves
     * the cluster when the index is next rebuilt (about once a second), which redraws anyway.
     */
    shows(id) {
      return id === selectedId || drawnIds.has(id) || indexStale || performance.now() - indexedAt >= REINDEX_MS;
    },
    /** The set of vehicles changed (added, removed, or first positioned): re-cluster now. */
    reindexSoon() {
      indexStale = true;
      redrawSoon();
    },
    select(id) {
      selectedId = id;
      redrawSoon();
    },
  };
}
