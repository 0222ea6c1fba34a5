-- The demo dataset behind `search_database`. All names, companies and
-- cities are fictitious. Bump user_version when the content changes so
-- existing sandboxes rebuild their copy.
PRAGMA user_version = 1;

CREATE TABLE products (
    id          INTEGER PRIMARY KEY NOT NULL,
    name        TEXT    NOT NULL,
    category    TEXT    NOT NULL,
    description TEXT    NOT NULL,
    price       REAL    NOT NULL
);

CREATE TABLE customers (
    id   INTEGER PRIMARY KEY NOT NULL,
    name TEXT    NOT NULL,
    city TEXT    NOT NULL,
    plan TEXT    NOT NULL
);

INSERT INTO products (id, name, category, description, price) VALUES
    (1,  'Lighthouse Desk Lamp',       'Office',      'Adjustable LED desk lamp with warm and cool light modes.',          49.90),
    (2,  'Harbor Notebook A5',         'Office',      'Dotted notebook, 160 pages of recycled paper.',                     12.50),
    (3,  'Quayside Standing Desk',     'Furniture',   'Electric height-adjustable desk, 140 x 70 cm oak top.',            529.00),
    (4,  'Tidewater Ergonomic Chair',  'Furniture',   'Mesh office chair with lumbar support and 4D armrests.',           349.00),
    (5,  'Beacon USB-C Hub',           'Electronics', 'Seven-port hub with HDMI, Ethernet and 100 W pass-through.',        59.00),
    (6,  'Anchor Noise-Cancelling Headset', 'Electronics', 'Wireless headset with boom microphone for calls.',            179.00),
    (7,  'Driftwood Monitor Arm',      'Furniture',   'Dual monitor arm with gas springs, fits 17 to 32 inch screens.',   119.00),
    (8,  'Chef''s Knife Classic',      'Kitchen',     'Forged 20 cm chef''s knife for the office kitchen.',                79.00),
    (9,  'Galley Coffee Grinder',      'Kitchen',     'Burr grinder with 40 grind settings.',                              89.00),
    (10, 'Pier Cotton Tote',           'Apparel',     'Tote bag made of 100% organic cotton.',                             15.00),
    (11, 'Mooring Hoodie',             'Apparel',     'Heavyweight hoodie, unisex fit, sizes XS to XXL.',                  55.00),
    (12, 'Signal Webcam 4K',           'Electronics', 'Webcam with auto framing and privacy shutter.',                    129.00),
    (13, 'Breakwater Backup Drive',    'Electronics', 'Rugged 2 TB portable SSD with hardware encryption.',               189.00),
    (14, 'Keel Mechanical Keyboard',   'Electronics', 'Tenkeyless keyboard with hot-swap switches; layout snake_case friendly.', 139.00),
    (15, 'Jetty Whiteboard',           'Office',      'Magnetic glass whiteboard, 90 x 60 cm, with marker tray.',          99.00),
    (16, 'Buoy Water Bottle',          'Kitchen',     'Insulated steel bottle, keeps drinks cold for 24 hours.',           25.00),
    (17, 'Compass Label Printer',      'Office',      'Thermal label printer for shipping and file folders.',             149.00),
    (18, 'Estuary Plant Pot',          'Furniture',   'Self-watering ceramic pot for desk plants.',                        35.00);

INSERT INTO customers (id, name, city, plan) VALUES
    (1,  'Ada Quillfeather',     'Port Amberly',   'enterprise'),
    (2,  'Borin Halvard',        'Northhaven',     'team'),
    (3,  'Celeste Moravin',      'Lake Tiren',     'free'),
    (4,  'Dorian Peplow',        'Port Amberly',   'team'),
    (5,  'Elowen Sparrowgate',   'Castlemere',     'enterprise'),
    (6,  'Fenwick Otterly',      'Northhaven',     'free'),
    (7,  'Greta Vantablum',      'Saltmarsh Bay',  'team'),
    (8,  'Hollis Brambleton',    'Lake Tiren',     'enterprise'),
    (9,  'Isolde Penhallow',     'Castlemere',     'free'),
    (10, 'Jasper O''Rourkeby',   'Saltmarsh Bay',  'team'),
    (11, 'Kestrel Amadine',      'Fernvale',       'enterprise'),
    (12, 'Lysander Coppersmith', 'Fernvale',       'free'),
    (13, 'Marisol Threnody',     'Port Amberly',   'team'),
    (14, 'Nico Wrenfield',       'Northhaven',     'enterprise');
