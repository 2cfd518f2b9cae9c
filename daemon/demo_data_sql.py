"""The SQL of the demo data generator (daemon.demo_data): session helpers and one
set-based INSERT ... SELECT generate_series statement per table.

Statements take %(seed)s, %(users)s and the chunk %(lo)s..%(hi)s of row numbers; pseudo-random
values come from pg_temp.rnd(row number, salt) (hashint8, seeded by the setting
gth_demo.seed), ids from pg_temp.uid(kind, seed, n) (md5), so a child row computes its
parent's id without reading it. Statements have no RETURNING: in bulk mode the generator
wraps the audited ones to stage their audit rows.
"""

from __future__ import annotations

from typing import NamedTuple


class Step(NamedTuple):
    table: str
    count_key: str  # which planned count drives the chunks of row numbers
    body: str


FUNCTIONS = """
CREATE OR REPLACE FUNCTION pg_temp.rnd(k bigint, salt integer) RETURNS double precision
    LANGUAGE sql STABLE
    AS $$ SELECT ((hashint8(k * 1000003 + salt * 7919
                            + current_setting('gth_demo.seed')::bigint * 104729)::bigint
                   + 2147483648) / 4294967296.0)::float8 $$;
CREATE OR REPLACE FUNCTION pg_temp.pick(arr text[], k bigint, salt integer) RETURNS text
    LANGUAGE sql STABLE
    AS $$ SELECT arr[1 + floor(pg_temp.rnd(k, salt) * cardinality(arr))::int] $$;
CREATE OR REPLACE FUNCTION pg_temp.uid(kind text, seed integer, i bigint) RETURNS uuid
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT md5(kind || ':' || seed || ':' || i)::uuid $$;
CREATE OR REPLACE FUNCTION pg_temp.city(i integer) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT (ARRAY['دبي', 'القاهرة', 'الرياض', 'إسطنبول', 'جدة', 'الدوحة', 'عمّان', 'مراكش',
                  'بيروت', 'مسقط', 'الكويت', 'أبوظبي'])[i] $$;
CREATE OR REPLACE FUNCTION pg_temp.airport(i integer) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT (ARRAY['DXB', 'CAI', 'RUH', 'IST', 'JED', 'DOH', 'AMM', 'RAK', 'BEY', 'MCT', 'KWI',
                  'AUH'])[i] $$;
CREATE OR REPLACE FUNCTION pg_temp.country(i integer) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT (ARRAY['AE', 'EG', 'SA', 'TR', 'SA', 'QA', 'JO', 'MA', 'LB', 'OM', 'KW', 'AE'])[i] $$;
CREATE OR REPLACE FUNCTION pg_temp.booking_src(seed integer, users bigint, lo bigint, hi bigint)
    RETURNS TABLE (j bigint, id uuid, user_id uuid, trip_id uuid, kind text, status text,
                   amount numeric, dest integer, booked_at timestamptz, start_date date,
                   end_date date)
    LANGUAGE sql STABLE AS $$
    SELECT g, pg_temp.uid('booking', seed, g), pg_temp.uid('user', seed, a.u),
           CASE WHEN g % 3 = 0 THEN pg_temp.uid('trip', seed, g / 3) END,
           CASE WHEN r.k < 0.35 THEN 'flight' WHEN r.k < 0.75 THEN 'hotel'
                WHEN r.k < 0.95 THEN 'package' ELSE 'activity' END,
           CASE WHEN r.s < 0.45 THEN 'completed' WHEN r.s < 0.75 THEN 'confirmed'
                WHEN r.s < 0.83 THEN 'pending' WHEN r.s < 0.95 THEN 'cancelled'
                ELSE 'refunded' END,
           round((CASE WHEN r.tier < 0.45 THEN 300 + r.a * 1100
                       WHEN r.tier < 0.85 THEN 1600 + r.a * 3200
                       ELSE 5200 + r.a * 14800 END)::numeric, 2),
           1 + floor(r.d * 12)::int, r.at,
           (r.at + (3 + floor(r.lead * 60)) * interval '1 day')::date,
           (r.at + (4 + floor(r.lead * 60) + floor(r.len * 10)) * interval '1 day')::date
      FROM generate_series(lo, hi) g
     CROSS JOIN LATERAL (SELECT 1 + floor(pg_temp.rnd(g, 11) * users)::bigint
                         AS u) a
     CROSS JOIN LATERAL (
         SELECT pg_temp.rnd(g, 12) AS k, pg_temp.rnd(g, 13) AS s,
                pg_temp.rnd(a.u, 14) AS tier, pg_temp.rnd(g, 15) AS a,
                pg_temp.rnd(g, 16) AS d, pg_temp.rnd(g, 17) AS lead,
                pg_temp.rnd(g, 18) AS len,
                now() - pg_temp.rnd(g, 19) * interval '548 days' AS at) r
$$;
CREATE TEMP TABLE IF NOT EXISTS demo_audit_stage (
    seq bigint GENERATED ALWAYS AS IDENTITY, occurred_at timestamptz, table_name text,
    operation text, row_id uuid, user_id uuid, actor text, payload jsonb
) ON COMMIT DELETE ROWS;
"""

USER_STEPS: list[Step] = [
    Step("users", "users", """
INSERT INTO users (id, email, full_name, phone, locale, preferred_currency, home_city,
                   marketing_consent, marketing_consent_at, data_processing_consent,
                   data_processing_consent_at, analytics_consent, analytics_consent_at,
                   last_login_at, created_at, updated_at, deleted_at)
SELECT pg_temp.uid('user', %(seed)s, g), 'traveler' || g || '.' || %(seed)s || '@example.com',
       pg_temp.pick(ARRAY['محمد', 'أحمد', 'فاطمة', 'عائشة', 'خالد', 'سارة', 'عمر', 'ليلى',
                          'يوسف', 'مريم', 'عبدالله', 'نور', 'حسن', 'هدى', 'علي', 'رنا'], g, 1)
           || ' ' || pg_temp.pick(ARRAY['العتيبي', 'المصري', 'الحربي', 'الشمري', 'القحطاني',
                                        'الزهراني', 'حداد', 'النجار', 'الخطيب', 'السيد'], g, 2),
       '+9665' || lpad((floor(pg_temp.rnd(g, 3) * 1e8))::bigint::text, 8, '0'),
       CASE WHEN pg_temp.rnd(g, 4) < 0.8 THEN 'ar' WHEN pg_temp.rnd(g, 4) < 0.9 THEN 'ar-SA'
            ELSE 'en' END,
       pg_temp.pick(ARRAY['SAR', 'SAR', 'AED', 'EGP', 'USD'], g, 5),
       pg_temp.city(1 + (g %% 12)::int),
       m.mk, CASE WHEN m.mk THEN m.created END, true, m.created, m.an,
       CASE WHEN m.an THEN m.created END, m.created + (now() - m.created) * pg_temp.rnd(g, 6),
       m.created, m.created,
       CASE WHEN g %% 20 = 7 THEN now() - (31 + pg_temp.rnd(g, 7) * 120) * interval '1 day'
            WHEN g %% 20 = 3 THEN now() - pg_temp.rnd(g, 7) * 25 * interval '1 day' END
  FROM generate_series(%(lo)s, %(hi)s) g
 CROSS JOIN LATERAL (SELECT pg_temp.rnd(g, 8) < 0.4 AS mk, pg_temp.rnd(g, 9) < 0.7 AS an,
     now() - (CASE WHEN g %% 20 IN (3, 7) THEN 160 ELSE 1 END + pg_temp.rnd(g, 10) * 560)
             * interval '1 day' AS created) m"""),
    Step("oauth_accounts", "users", """
INSERT INTO oauth_accounts (user_id, provider, provider_account_id, provider_email,
                            access_token, refresh_token, token_expires_at, scope, profile,
                            created_at)
SELECT pg_temp.uid('user', %(seed)s, g), p.provider, p.provider || '-' || %(seed)s || '-' || g,
       'traveler' || g || '@' || p.provider || '.example', md5('a' || g), md5('r' || g),
       now() + interval '1 hour', 'openid email profile',
       jsonb_build_object('locale', 'ar', 'verified', true), now() - interval '30 days'
  FROM generate_series(%(lo)s, %(hi)s) g
 CROSS JOIN LATERAL (SELECT pg_temp.pick(ARRAY['google', 'apple', 'facebook'], g, 20)
                     AS provider) p
 WHERE g %% 2 = 0"""),
]

BOOKING_STEPS: list[Step] = [
    Step("trips", "bookings", """
INSERT INTO trips (id, user_id, title, origin, destination, start_date, end_date, budget,
                   travelers_count, status, preferences, created_at)
SELECT b.trip_id, b.user_id, 'رحلة إلى ' || pg_temp.city(b.dest), 'الرياض',
       pg_temp.city(b.dest), b.start_date, b.end_date, round(b.amount * 1.2, 2),
       1 + (b.j %% 4)::int,
       CASE b.status WHEN 'completed' THEN 'completed' WHEN 'cancelled' THEN 'cancelled'
                     WHEN 'pending' THEN 'planning' ELSE 'booked' END,
       jsonb_build_object('interests', pg_temp.pick(ARRAY['تسوق', 'شواطئ', 'تاريخ', 'عائلة'],
                          b.j, 21), 'halal_food', true), b.booked_at
  FROM pg_temp.booking_src(%(seed)s, %(users)s, %(lo)s, %(hi)s) b
 WHERE b.trip_id IS NOT NULL"""),
    Step("bookings", "bookings", """
INSERT INTO bookings (id, user_id, trip_id, booking_reference, booking_type, status,
                      total_amount, currency, destination, start_date, end_date, metadata,
                      booked_at, cancelled_at, created_at, updated_at)
SELECT b.id, b.user_id, b.trip_id, 'GTH-' || %(seed)s || '-' || b.j, b.kind, b.status,
       b.amount, 'SAR', pg_temp.city(b.dest), b.start_date, b.end_date,
       jsonb_build_object('channel', pg_temp.pick(ARRAY['app', 'web', 'chat'], b.j, 22)),
       b.booked_at,
       CASE WHEN b.status IN ('cancelled', 'refunded') THEN b.booked_at + interval '1 day' END,
       b.booked_at, b.booked_at
  FROM pg_temp.booking_src(%(seed)s, %(users)s, %(lo)s, %(hi)s) b"""),
    Step("booking_items", "bookings", """
INSERT INTO booking_items (id, booking_id, user_id, item_type, description, quantity,
                           unit_price, total_price, status, details, created_at)
SELECT pg_temp.uid('item', %(seed)s, b.j * 2 + i.n), b.id, b.user_id, i.kind,
       i.kind || ' → ' || pg_temp.city(b.dest), 1, p.price, p.price,
       CASE b.status WHEN 'refunded' THEN 'refunded' ELSE b.status END,
       jsonb_build_object('destination', pg_temp.city(b.dest)), b.booked_at
  FROM pg_temp.booking_src(%(seed)s, %(users)s, %(lo)s, %(hi)s) b
 CROSS JOIN LATERAL unnest(CASE b.kind WHEN 'package' THEN ARRAY['flight', 'hotel']
                                       ELSE ARRAY[b.kind] END) WITH ORDINALITY i(kind, n)
 CROSS JOIN LATERAL (SELECT CASE WHEN b.kind <> 'package' THEN b.amount
                                 WHEN i.n = 1 THEN round(b.amount * 0.4, 2)
                                 ELSE b.amount - round(b.amount * 0.4, 2) END AS price) p"""),
    Step("flight_bookings", "bookings", """
INSERT INTO flight_bookings (booking_item_id, user_id, airline_code, flight_number,
                             origin_airport, destination_airport, departure_at, arrival_at,
                             cabin_class, passenger_count, pnr, price, passenger_details,
                             created_at)
SELECT pg_temp.uid('item', %(seed)s, b.j * 2 + 1), b.user_id, f.airline,
       f.airline || (100 + b.j %% 900), pg_temp.airport(1 + (b.dest + 1 + (b.j %% 10)::int) %% 12),
       pg_temp.airport(b.dest), f.dep, f.dep + (1 + pg_temp.rnd(b.j, 31) * 5) * interval '1 hour',
       CASE WHEN b.amount > 5000 THEN 'business' ELSE 'economy' END, 1,
       upper(substr(md5(b.id::text), 1, 6)),
       CASE WHEN b.kind = 'package' THEN round(b.amount * 0.4, 2) ELSE b.amount END,
       jsonb_build_object('meal', 'halal'), b.booked_at
  FROM pg_temp.booking_src(%(seed)s, %(users)s, %(lo)s, %(hi)s) b
 CROSS JOIN LATERAL (SELECT pg_temp.pick(ARRAY['SV', 'MS', 'EK', 'QR', 'TK', 'XY', 'RJ'],
                                         b.j, 30) AS airline,
                            b.start_date + interval '6 hours' AS dep) f
 WHERE b.kind IN ('flight', 'package')"""),
    Step("hotel_bookings", "bookings", """
INSERT INTO hotel_bookings (booking_item_id, user_id, hotel_identifier, hotel_name, city,
                            country_code, star_rating, check_in, check_out, rooms, guests,
                            room_type, price_per_night, total_price, details, created_at)
SELECT pg_temp.uid('item', %(seed)s, b.j * 2 + CASE b.kind WHEN 'package' THEN 2 ELSE 1 END),
       b.user_id, h.hotel, pg_temp.pick(ARRAY['فندق', 'منتجع', 'أجنحة', 'دار'], b.j, 40) || ' '
       || pg_temp.city(b.dest), pg_temp.city(b.dest), pg_temp.country(b.dest),
       CASE WHEN b.amount > 5000 THEN 5 WHEN b.amount > 1500 THEN 4 ELSE 3 END,
       b.start_date, b.end_date, 1, 1 + (b.j %% 4)::int, 'standard',
       round(h.total / (b.end_date - b.start_date), 2), h.total,
       jsonb_build_object('breakfast', b.j %% 2 = 0), b.booked_at
  FROM pg_temp.booking_src(%(seed)s, %(users)s, %(lo)s, %(hi)s) b
 CROSS JOIN LATERAL (SELECT 'hotel-' || b.dest || '-' || (1 + b.j %% 8) AS hotel,
        CASE WHEN b.kind = 'package' THEN b.amount - round(b.amount * 0.4, 2)
             ELSE b.amount END AS total) h
 WHERE b.kind IN ('hotel', 'package')"""),
    Step("hotel_ratings", "bookings", """
INSERT INTO hotel_ratings (user_id, booking_id, hotel_identifier, rating,
                           exceeded_expectations, would_rebook, review_text, created_at)
SELECT b.user_id, b.id, 'hotel-' || b.dest || '-' || (1 + b.j %% 8), r.stars, r.stars = 5,
       r.stars >= 4, pg_temp.pick(ARRAY['إقامة رائعة', 'خدمة ممتازة', 'الموقع مثالي',
                                        'الغرف تحتاج تجديد'], b.j, 50), b.end_date + 1
  FROM pg_temp.booking_src(%(seed)s, %(users)s, %(lo)s, %(hi)s) b
 CROSS JOIN LATERAL (SELECT (2 + floor(pg_temp.rnd(b.j, 51) * 4))::smallint AS stars) r
 WHERE b.kind IN ('hotel', 'package') AND b.status = 'completed'
   AND pg_temp.rnd(b.j, 52) < 0.6"""),
    Step("crypto_payments", "bookings", """
INSERT INTO crypto_payments (user_id, booking_id, amount, currency, network, fiat_amount,
                             exchange_rate, wallet_address, tx_hash, confirmations, status,
                             expires_at, confirmed_at, created_at, updated_at)
SELECT b.user_id, b.id, round(b.amount / c.rate, 8), c.cur, c.net, b.amount, c.rate,
       'wallet-' || md5(b.id::text),
       CASE WHEN s.st = 'confirmed' THEN '0x' || md5('tx' || b.id) END,
       CASE WHEN s.st = 'confirmed' THEN 12 ELSE 0 END, s.st, s.created + interval '30 minutes',
       CASE WHEN s.st = 'confirmed' THEN s.created + interval '5 minutes' END, s.created, s.created
  FROM pg_temp.booking_src(%(seed)s, %(users)s, %(lo)s, %(hi)s) b
 CROSS JOIN LATERAL (SELECT (ARRAY['BTC', 'ETH', 'USDT'])[1 + (b.j %% 3)::int] AS cur,
        (ARRAY['bitcoin', 'ethereum', 'tron'])[1 + (b.j %% 3)::int] AS net,
        (ARRAY[250000, 12000, 3.75])[1 + (b.j %% 3)::int]::numeric AS rate) c
 CROSS JOIN LATERAL (SELECT (ARRAY['pending', 'pending', 'confirmed', 'expired', 'failed'])
                            [1 + (b.j / 10 %% 5)::int] AS st,
        CASE b.j / 10 %% 5 WHEN 0 THEN now() - pg_temp.rnd(b.j, 60) * interval '10 minutes'
             WHEN 1 THEN now() - (2 + pg_temp.rnd(b.j, 60) * 46) * interval '1 hour'
             ELSE b.booked_at END AS created) s
 WHERE b.j %% 10 = 4"""),
    Step("outcome_predictions", "bookings", """
INSERT INTO outcome_predictions (booking_id, user_id, predicted_rating, predicted_satisfaction,
                                 confidence_level, actual_rating, prediction_accuracy,
                                 features, created_at, evaluated_at)
SELECT b.id, b.user_id, p.pred, round((0.5 + pg_temp.rnd(b.j, 71) / 2)::numeric, 3),
       round((0.5 + pg_temp.rnd(b.j, 72) / 2)::numeric, 3), a.actual,
       round(abs(p.pred - a.actual) / 5.0, 3), jsonb_build_object('model', 'outcome-v2'),
       b.booked_at, CASE WHEN a.actual IS NOT NULL THEN now() END
  FROM pg_temp.booking_src(%(seed)s, %(users)s, %(lo)s, %(hi)s) b
 CROSS JOIN LATERAL (SELECT round((3 + pg_temp.rnd(b.j, 70) * 2)::numeric, 2) AS pred) p
 CROSS JOIN LATERAL (SELECT CASE WHEN b.status = 'completed'
                            THEN (1 + floor(pg_temp.rnd(b.j, 73) * 5))::smallint END AS actual) a
 WHERE b.j %% 7 = 2"""),
]

OTHER_STEPS: list[Step] = [
    Step("chat_sessions", "sessions", """
INSERT INTO chat_sessions (id, user_id, thread_id, checkpoint_ns, title, metadata, created_at,
                           last_message_at)
SELECT pg_temp.uid('session', %(seed)s, g),
       pg_temp.uid('user', %(seed)s, 1 + floor(pg_temp.rnd(g, 80) * %(users)s)::bigint),
       'thread-' || %(seed)s || '-' || g, '',
       pg_temp.pick(ARRAY['تخطيط رحلة عائلية', 'عمرة رمضان', 'شهر العسل', 'رحلة عمل'], g, 81),
       jsonb_build_object('model', 'travel-agent', 'lang', 'ar'),
       now() - pg_temp.rnd(g, 82) * interval '75 days',
       now() - pg_temp.rnd(g, 82) * interval '75 days' + interval '12 minutes'
  FROM generate_series(%(lo)s, %(hi)s) g"""),
    Step("chat_messages", "messages", """
INSERT INTO chat_messages (created_at, session_id, user_id, role, content, tokens_used, metadata)
SELECT now() - pg_temp.rnd(s, 82) * interval '75 days' + (g %% 6) * interval '2 minutes',
       pg_temp.uid('session', %(seed)s, s),
       pg_temp.uid('user', %(seed)s, 1 + floor(pg_temp.rnd(s, 80) * %(users)s)::bigint),
       CASE WHEN g %% 2 = 0 THEN 'user' ELSE 'assistant' END,
       CASE WHEN g %% 2 = 0 THEN pg_temp.pick(ARRAY['أبحث عن فندق في دبي قريب من المول',
            'ما أرخص رحلة من الرياض إلى القاهرة؟', 'أريد رحلة عائلية إلى إسطنبول'], g, 83)
            ELSE pg_temp.pick(ARRAY['وجدت لك ثلاثة خيارات مناسبة لميزانيتك.',
            'هذه أفضل الرحلات المتاحة في التواريخ المطلوبة.', 'هل تفضل فندقا بإفطار مجاني؟'],
            g, 84) END,
       (20 + floor(pg_temp.rnd(g, 85) * 400))::int, jsonb_build_object('turn', g %% 6)
  FROM generate_series(%(lo)s, %(hi)s) g
 CROSS JOIN LATERAL (SELECT (g - 1) / 6 + 1 AS s) x"""),
    Step("analytics_events", "events", """
INSERT INTO analytics_events (occurred_at, user_id, session_key, event_type, event_data, page,
                              platform)
SELECT now() - pg_temp.rnd(g, 90) * interval '60 days',
       CASE WHEN g %% 10 <> 0
            THEN pg_temp.uid('user', %(seed)s,
                             1 + floor(pg_temp.rnd(g, 91) * %(users)s)::bigint) END,
       md5('s' || g / 20), e.t, jsonb_build_object('city', pg_temp.city(1 + (g %% 12)::int)),
       '/' || replace(e.t, '.', '/'), pg_temp.pick(ARRAY['web', 'ios', 'android'], g, 93)
  FROM generate_series(%(lo)s, %(hi)s) g
 CROSS JOIN LATERAL (SELECT pg_temp.pick(ARRAY['app.open', 'page.view', 'search.flight',
        'search.hotel', 'booking.start', 'booking.complete', 'chat.message'], g, 92) AS t) e"""),
    Step("user_behavior_log", "behavior_rows", """
INSERT INTO user_behavior_log ("timestamp", user_id, session_id, action_type, action_data,
                               device_type, duration_ms)
SELECT m.start + pg_temp.rnd(g, 100) * (now() - m.start),
       pg_temp.uid('user', %(seed)s, 1 + floor(pg_temp.rnd(g, 101) * %(users)s)::bigint), NULL,
       pg_temp.pick(ARRAY['flight_search', 'hotel_search', 'hotel_view', 'booking_start',
                          'booking_complete', 'chat_open', 'destination_view', 'price_alert'],
                    g, 102),
       jsonb_build_object('destination', pg_temp.city(1 + (g %% 12)::int),
                          'budget', 100 * (1 + g %% 50)),
       pg_temp.pick(ARRAY['mobile', 'mobile', 'desktop', 'tablet'], g, 103),
       floor(pg_temp.rnd(g, 104) * 120000)::int
  FROM generate_series(%(lo)s, %(hi)s) g
 CROSS JOIN LATERAL (SELECT (date_trunc('month', now() AT TIME ZONE 'UTC')
                             - interval '1 month') AT TIME ZONE 'UTC' AS start) m"""),
    Step("flight_search_cache", "caches", """
INSERT INTO flight_search_cache (cache_key, origin, destination, departure_date, return_date,
                                 passengers, provider, search_params, results, hit_count,
                                 last_hit_at, created_at, expires_at)
SELECT 'flight:' || %(seed)s || ':' || g, 'RUH', pg_temp.airport(1 + (g %% 12)::int),
       current_date + (1 + g %% 90)::int, current_date + (5 + g %% 90)::int, 1 + (g %% 3)::int,
       pg_temp.pick(ARRAY['amadeus', 'sabre', 'duffel'], g, 110),
       jsonb_build_object('direct', g %% 2 = 0),
       jsonb_build_array(jsonb_build_object('airline', 'SV', 'price', 400 + g %% 900)),
       floor(pg_temp.rnd(g, 111) * 50)::int, t.created, t.created,
       t.created + CASE WHEN g %% 3 = 0 THEN interval '30 minutes' ELSE interval '3 hours' END
  FROM generate_series(%(lo)s, %(hi)s) g
 CROSS JOIN LATERAL (SELECT CASE WHEN g %% 3 = 0
        THEN now() - (2 + pg_temp.rnd(g, 112) * 46) * interval '1 hour'
        ELSE now() - pg_temp.rnd(g, 112) * interval '30 minutes' END AS created) t"""),
    Step("hotel_search_cache", "caches", """
INSERT INTO hotel_search_cache (cache_key, city, check_in, check_out, guests, provider,
                                search_params, results, hit_count, created_at, expires_at)
SELECT 'hotel:' || %(seed)s || ':' || g, pg_temp.city(1 + (g %% 12)::int),
       current_date + (1 + g %% 60)::int, current_date + (3 + g %% 60)::int, 2, 'booking',
       jsonb_build_object('stars', 3 + g %% 3),
       jsonb_build_array(jsonb_build_object('hotel', 'hotel-' || (1 + g %% 12) || '-1',
                                            'price', 250 + g %% 700)),
       floor(pg_temp.rnd(g, 121) * 30)::int, t.created,
       t.created + CASE WHEN g %% 3 = 1 THEN interval '30 minutes' ELSE interval '6 hours' END
  FROM generate_series(%(lo)s, %(hi)s) g
 CROSS JOIN LATERAL (SELECT CASE WHEN g %% 3 = 1
        THEN now() - (2 + pg_temp.rnd(g, 122) * 46) * interval '1 hour'
        ELSE now() - pg_temp.rnd(g, 122) * interval '1 hour' END AS created) t"""),
    Step("referrals", "referrals", """
INSERT INTO referrals (referrer_user_id, referred_user_id, referral_code, channel, status,
                       reward_amount, created_at, signed_up_at, converted_at)
SELECT pg_temp.uid('user', %(seed)s, r.a), CASE WHEN s.st <> 'pending'
           AND s.st <> 'expired' THEN pg_temp.uid('user', %(seed)s, r.b) END,
       'REF-' || %(seed)s || '-' || g, pg_temp.pick(ARRAY['whatsapp', 'telegram', 'link'], g, 130),
       s.st, CASE WHEN s.st = 'converted' THEN 50 END, now() - interval '90 days',
       CASE WHEN s.st IN ('signed_up', 'converted') THEN now() - interval '60 days' END,
       CASE WHEN s.st = 'converted' THEN now() - interval '30 days' END
  FROM generate_series(%(lo)s, %(hi)s) g
 CROSS JOIN LATERAL (SELECT 1 + floor(pg_temp.rnd(g, 131) * %(users)s)::bigint AS a) r0
 CROSS JOIN LATERAL (SELECT r0.a, 1 + (r0.a + floor(pg_temp.rnd(g, 132) * (%(users)s - 1)))::bigint
                            %% %(users)s AS b) r
 CROSS JOIN LATERAL (SELECT pg_temp.pick(ARRAY['pending', 'signed_up', 'converted', 'expired'],
                                         g, 133) AS st) s
 WHERE %(users)s > 1"""),
    Step("shared_content", "shares", """
INSERT INTO shared_content (user_id, content_type, content_id, share_platform, click_count,
                            conversion_count, created_at)
SELECT pg_temp.uid('user', %(seed)s, 1 + floor(pg_temp.rnd(g, 140) * %(users)s)::bigint),
       'trip', 'trip-' || g, pg_temp.pick(ARRAY['whatsapp', 'telegram', 'twitter', 'snapchat'],
                                          g, 141), c.clicks,
       floor(c.clicks * pg_temp.rnd(g, 143) * 0.3)::int, now() - interval '20 days'
  FROM generate_series(%(lo)s, %(hi)s) g
 CROSS JOIN LATERAL (SELECT floor(pg_temp.rnd(g, 142) * 40)::int AS clicks) c"""),
    Step("trip_predictions", "predictions", """
INSERT INTO trip_predictions (user_id, predicted_destination, predicted_start_date,
                              predicted_end_date, predicted_budget, confidence_level, status,
                              features, model_version)
SELECT pg_temp.uid('user', %(seed)s, g * 4 - 3), pg_temp.city(1 + (g %% 12)::int),
       current_date + (30 + g %% 120)::int, current_date + (35 + g %% 120)::int,
       1000 + g %% 9000, round((0.3 + pg_temp.rnd(g, 150) * 0.69)::numeric, 3),
       pg_temp.pick(ARRAY['active', 'active', 'accepted', 'dismissed'], g, 151),
       jsonb_build_object('signals', jsonb_build_array('searches', 'season')), 'next-trip-v1.3'
  FROM generate_series(%(lo)s, %(hi)s) g"""),
]

# Bulk mode only (the users trigger that records consents is bypassed there).
CONSENT_STEP = Step("user_consent_history", "users", """
INSERT INTO user_consent_history (user_id, consent_type, granted, source, recorded_at)
SELECT u.id, c.kind, c.granted, 'system', u.created_at
  FROM generate_series(%(lo)s, %(hi)s) g
  JOIN users u ON u.id = pg_temp.uid('user', %(seed)s, g)
 CROSS JOIN LATERAL (VALUES ('marketing', u.marketing_consent),
                            ('data_processing', u.data_processing_consent),
                            ('analytics', u.analytics_consent)) c(kind, granted)""")
