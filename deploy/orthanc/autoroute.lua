-- dicomnode auto-routing for Orthanc (tested with Debian's Orthanc 1.10.1).
--
-- Every stable series of an imaging modality is sent, as one series, to the Orthanc modality named
-- `dicomnode` (see DicomModalities in orthanc.json). What the node made and sends back (its SEG, SR and
-- derived series) is never sent to it again, so the round trip cannot loop.
--
-- A series is skipped when any of these holds (each skip is logged with the reason):
--   * its Modality is not in IMAGING_MODALITIES (SEG, SR, RTSTRUCT, PR, KO, ... never go);
--   * its Manufacturer is "dicomnode" (every object the node makes says so);
--   * it was received from the node's AE title (metadata RemoteAET = NODE_AET);
--   * the SOP class of its first instance is not an image storage class (SEG, SR, RT, PR, KOS...).
--
-- Why the REST route: Orthanc 1.10's Lua SendToModality() works on one instance (given a series id it
-- fails), while POST /modalities/{name}/store takes a series and sends it over one association.
-- The send runs as an Orthanc job (Asynchronous): a failure shows in Orthanc's log and in its Jobs list
-- (GET /jobs?expand), where it can be resubmitted (POST /jobs/{id}/resubmit).

local TARGET = 'dicomnode'          -- name of the modality in DicomModalities
local NODE_AET = 'DICOMNODE'        -- the node's AE title ([node] ae_title in dicomnode.toml)
local NODE_MANUFACTURER = 'dicomnode'

local IMAGING_MODALITIES = {
   CT = true, MR = true, PT = true, NM = true, US = true, CR = true, DX = true, MG = true,
   XA = true, RF = true, OT = true,
}

-- SOP class UID prefixes of non-image objects (never sent to the node)
local NON_IMAGE_SOP_CLASSES = {
   '1.2.840.10008.5.1.4.1.1.66',      -- raw data, spatial registration, fiducials, SEG (66.4), surface
   '1.2.840.10008.5.1.4.1.1.88.',     -- structured reports, key object selection (88.59)
   '1.2.840.10008.5.1.4.1.1.481.',    -- RT objects (RTSTRUCT, RTPLAN, RTDOSE...)
   '1.2.840.10008.5.1.4.1.1.11.',     -- presentation states
   '1.2.840.10008.5.1.4.1.1.104.',    -- encapsulated PDF / CDA
}

local function Log(message)
   print('dicomnode-autoroute: ' .. message)
end

local function Trim(s)
   return (string.gsub(s or '', '^%s*(.-)%s*$', '%1'))
end

local function IsNonImageSopClass(uid)
   for _, prefix in ipairs(NON_IMAGE_SOP_CLASSES) do
      if string.sub(uid, 1, string.len(prefix)) == prefix then
         return true
      end
   end
   return false
end

local function FirstSopClass(seriesId)
   local series = ParseJson(RestApiGet('/series/' .. seriesId))
   local first = series['Instances'] and series['Instances'][1]
   if first == nil then
      return nil
   end
   local ok, sop = pcall(RestApiGet, '/instances/' .. first .. '/metadata/SopClassUid')
   if ok then
      return Trim(sop)
   end
   return nil
end

-- Returns nil when the series goes to the node, or the reason why not.
local function WhyNotRoute(seriesId, tags, metadata)
   local modality = Trim(tags['Modality'])
   if not IMAGING_MODALITIES[modality] then
      return 'modality ' .. (modality ~= '' and modality or '(none)') .. ' is not an imaging modality'
   end
   if string.lower(Trim(tags['Manufacturer'])) == NODE_MANUFACTURER then
      return 'made by dicomnode (Manufacturer ' .. NODE_MANUFACTURER .. ')'
   end
   if metadata ~= nil and Trim(metadata['RemoteAET']) == NODE_AET then
      return 'received from the node (' .. NODE_AET .. ')'
   end
   local sop = FirstSopClass(seriesId)
   if sop ~= nil and IsNonImageSopClass(sop) then
      return 'SOP class ' .. sop .. ' is not an image'
   end
   return nil
end

function OnStableSeries(seriesId, tags, metadata)
   local uid = Trim(tags['SeriesInstanceUID'])
   local why = WhyNotRoute(seriesId, tags, metadata)
   if why ~= nil then
      Log('not sending series ' .. uid .. ' (' .. seriesId .. '): ' .. why)
      return
   end
   local body = DumpJson({ Resources = { seriesId }, Asynchronous = true }, true)
   -- RestApiPost returns nil on failure (Orthanc logs the cause); pcall also catches a Lua error
   local ok, answer = pcall(RestApiPost, '/modalities/' .. TARGET .. '/store', body)
   if ok and answer ~= nil and answer ~= '' then
      local job = ParseJson(answer)
      Log('sending series ' .. uid .. ' (' .. seriesId .. ', modality ' .. Trim(tags['Modality']) ..
          ') to ' .. TARGET .. ': job ' .. tostring(job and job['ID']))
   else
      Log('FAILED to queue series ' .. uid .. ' (' .. seriesId .. ') for ' .. TARGET .. ': ' .. tostring(answer))
   end
end

Log('installed: stable image series go to modality ' .. TARGET .. ' (AE ' .. NODE_AET .. ')')
