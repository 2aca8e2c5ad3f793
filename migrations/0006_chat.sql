-- Chat: one conversation per shipment between its driver, the dispatchers and (when the share
-- link allows it) the customer. Every message and every change to one (edit, delete, reaction)
-- takes a seq under the event_seq lock, like positions, so `since` resumes chat exactly:
-- `seq` is when it was sent, `updated_seq` its latest change.
ALTER TABLE share_links ADD COLUMN chat boolean NOT NULL DEFAULT false;

CREATE TABLE chat_messages (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organisation_id  bigint NOT NULL REFERENCES organisations (id) ON DELETE CASCADE,
    shipment_id      bigint NOT NULL REFERENCES shipments (id) ON DELETE CASCADE,
    -- Who wrote it: 'user:<id>' or 'customer:<share link>'; with the client's own id for the
    -- message, a re-send is stored once.
    author_key       text NOT NULL,
    author_id        bigint REFERENCES users (id) ON DELETE SET NULL,
    author_name      text NOT NULL,
    author_role      text NOT NULL,
    client_id        text NOT NULL,
    -- NULL once deleted: a deleted message keeps its place in the conversation.
    body             text,
    reactions        jsonb NOT NULL DEFAULT '{}',
    seq              bigint NOT NULL,
    updated_seq      bigint NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    edited_at        timestamptz,
    deleted_at       timestamptz,
    CONSTRAINT chat_messages_client_key UNIQUE (shipment_id, author_key, client_id)
);
CREATE INDEX chat_messages_shipment_seq_idx ON chat_messages (shipment_id, seq);
CREATE INDEX chat_messages_updated_seq_idx ON chat_messages USING brin (updated_seq);

-- How far each participant has read each conversation.
CREATE TABLE chat_reads (
    shipment_id      bigint NOT NULL REFERENCES shipments (id) ON DELETE CASCADE,
    participant      text NOT NULL,
    read_seq         bigint NOT NULL,
    seq              bigint NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (shipment_id, participant)
);
